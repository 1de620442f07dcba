"""Benchmark of the validation stage: a synthetic day of lab rows (``pipeline.synth.tables.labs_day``) through
validate_batch.

Run with ``ehr-pipeline bench validate`` (the CLI calls :func:`run_validation_benchmark`).
"""

from __future__ import annotations

import os
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.bench.sections import replace_section
from pipeline.synth.tables import labs_day
from pipeline.validate.config import ValidationConfig
from pipeline.validate.engine import validate_batch

BENCH_DS = date(2150, 3, 14)
SECTION = "## Validation"
ADMISSIONS = 50_000


def run_validation_benchmark(rows: int = 1_000_000, out_md: Path = Path("BENCHMARKS.md")) -> dict[str, Any]:
    """Time validate_batch on ``rows`` synthetic lab rows; write the "## Validation" section of ``out_md``."""
    labs, known = labs_day(rows, BENCH_DS, admissions=ADMISSIONS)
    config = ValidationConfig(on_batch_failure="warn")
    started = time.perf_counter()
    outcome = validate_batch(
        {"labs": labs}, ds=BENCH_DS, run_id="bench-validate", pre_quarantine=None,
        known_admissions=known, known_subject_ids=pa.array([], pa.int64()),
        trailing_volumes={"labs": [rows, rows, rows]}, config=config, data_docs_dir=None,
    )
    seconds = time.perf_counter() - started
    counts = outcome.counts["labs"]
    result = {
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "rows_passed": counts["rows_passed"],
        "rows_quarantined": counts["rows_quarantined"],
        "expectations": outcome.results.num_rows,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    replace_section(Path(out_md), render_section(result))
    return result


def render_section(result: dict[str, Any]) -> str:
    """The "## Validation" section of BENCHMARKS.md from the result of :func:`run_validation_benchmark`."""
    return "\n".join([
        SECTION,
        "",
        "Command: `ehr-pipeline bench validate` (calls `pipeline.bench.validate.run_validation_benchmark`).",
        "",
        f"Synthetic labs day, {result['rows']:,} rows over {ADMISSIONS:,} known admissions, 0.1 % planted bad rows; "
        "`validate_batch` end to end (schema check, derived columns, GX suite, quarantine assembly, batch checks), "
        "without Data Docs.",
        "",
        "| rows | seconds | rows/s | passed | quarantined | results rows | CPUs | Python |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {result['rows']:,} | {result['seconds']} | {result['rows_per_second']:,} | {result['rows_passed']:,} "
        f"| {result['rows_quarantined']:,} | {result['expectations']} | {result['cpus']} | {result['python']} |",
        "",
    ])
