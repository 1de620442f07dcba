"""BENCHMARKS.md sections: each benchmark replaces only its own ``## `` section."""

from __future__ import annotations

import pytest

from pipeline.bench.sections import replace_section


def test_sections_replace_only_the_named_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    replace_section(path, "## NER\nfirst\n")
    replace_section(path, "## NER memory\nmemory\n")
    replace_section(path, "## NER\nsecond\n")
    text = path.read_text()
    assert text == "# Benchmarks\n\n## NER\nsecond\n\n## NER memory\nmemory\n"


def test_sections_heading_required(tmp_path):
    with pytest.raises(ValueError, match="heading"):
        replace_section(tmp_path / "B.md", "no heading\n")
