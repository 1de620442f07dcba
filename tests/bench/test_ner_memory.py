"""The NER memory benchmark runs the real task in a child process and writes its own section."""

from __future__ import annotations

import pytest

from pipeline.bench.ner_memory import run_ner_memory_benchmark
from pipeline.bench.sections import replace_section
from tests.nlp.conftest import build_tiny_model


@pytest.mark.slow
def test_ner_memory_runs_the_task_and_keeps_other_sections(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    replace_section(out, "## NER\nthe throughput section\n")
    result = run_ner_memory_benchmark(build_tiny_model(tmp_path / "m"), n_notes=12, out_md=out)
    assert result["notes"] == 12 and result["peak_rss_mb"] > 50
    text = out.read_text()
    assert "## NER\nthe throughput section" in text and "## NER memory" in text and "12 notes" in text
