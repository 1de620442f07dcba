"""The NER memory benchmark runs the real task in a child process and writes its own section."""

from __future__ import annotations

import pytest

from pipeline.benchmarks_md import replace_section
from pipeline.contracts import arrow_schema
from pipeline.memory_bench import notes_partition, run_ner_memory_benchmark
from tests.nlp.conftest import build_tiny_model


def test_memory_bench_partition_has_the_notes_contract():
    table = notes_partition(5)
    assert table.schema == arrow_schema("notes") and table.num_rows == 5


@pytest.mark.slow
def test_memory_bench_runs_the_task_and_keeps_other_sections(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    replace_section(out, "## NER\nthe throughput section\n")
    result = run_ner_memory_benchmark(build_tiny_model(tmp_path / "m"), n_notes=12, out_md=out)
    assert result["notes"] == 12 and result["peak_rss_mb"] > 50
    text = out.read_text()
    assert "## NER\nthe throughput section" in text and "## NER memory" in text and "12 notes" in text


def test_memory_bench_section_heading_required(tmp_path):
    with pytest.raises(ValueError, match="heading"):
        replace_section(tmp_path / "B.md", "no heading\n")
