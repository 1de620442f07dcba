"""Benchmark of the validation stage: a synthetic day of lab rows through validate_batch.

Run with ``ehr-pipeline bench validate`` (the CLI calls :func:`run_validation_benchmark`).
"""

from __future__ import annotations

import os
import platform
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.benchmarks_md import replace_section
from pipeline.validate.config import ValidationConfig
from pipeline.validate.engine import validate_batch

BENCH_DS = date(2150, 3, 14)
SECTION = "## Validation"


def synthetic_labs(rows: int, admissions: int = 50_000, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    """``rows`` lab results in the canonical schema over ``admissions`` known admissions, 0.1 % bad."""
    rng = np.random.default_rng(seed)
    day_start = np.datetime64(datetime(2150, 3, 14), "us")
    hadm_ids = np.arange(20_000_000, 20_000_000 + admissions, dtype=np.int64)
    subject_of = np.arange(10_000_000, 10_000_000 + admissions, dtype=np.int64)
    pick = rng.integers(0, admissions, rows)
    hadm = hadm_ids[pick]
    valuenum = rng.normal(1.0, 0.3, rows)
    bad = rng.choice(rows, size=max(rows // 1000, 1), replace=False)
    valuenum[bad[: len(bad) // 2]] = np.nan  # non_finite_value
    hadm_with_unknown = hadm.copy()
    hadm_with_unknown[bad[len(bad) // 2:]] = 1  # unknown_admission
    outpatient = rng.random(rows) < 0.2
    charttime = day_start + rng.integers(0, 86_400_000_000, rows).astype("timedelta64[us]")
    labs = pa.table({
        "labevent_id": pa.array(np.arange(rows, dtype=np.int64)),
        "subject_id": pa.array(subject_of[pick]),
        "hadm_id": pa.array(hadm_with_unknown, mask=outpatient),
        "specimen_id": pa.array(rng.integers(1, 10**8, rows)),
        "itemid": pa.array(rng.integers(50_800, 52_000, rows).astype(np.int32)),
        "charttime": pa.array(charttime),
        "storetime": pa.array(charttime + np.timedelta64(3_600_000_000, "us")),
        "value": pa.array(np.char.mod("%.2f", valuenum)),
        "valuenum": pa.array(valuenum),
        "valueuom": pa.array(np.where(rng.random(rows) < 0.5, "mg/dL", "mEq/L")),
        "ref_range_lower": pa.array(np.full(rows, 0.5)),
        "ref_range_upper": pa.array(np.full(rows, 1.5)),
        "flag": pa.array(np.where(valuenum > 1.5, "abnormal", None)),
        "priority": pa.array(np.where(rng.random(rows) < 0.7, "ROUTINE", "STAT")),
        "comments": pa.nulls(rows, pa.string()),
        "ds": pa.array(np.full(rows, BENCH_DS), pa.date32()),
    })
    admit = np.datetime64(datetime(2150, 3, 10), "us")
    known = pa.table({
        "hadm_id": pa.array(hadm_ids), "subject_id": pa.array(subject_of),
        "admittime": pa.array(np.full(admissions, admit)),
        "dischtime": pa.array(np.full(admissions, admit + np.timedelta64(5 * 86_400_000_000, "us"))),
    })
    return labs, known


def run_validation_benchmark(rows: int = 1_000_000, out_md: Path = Path("BENCHMARKS.md")) -> dict[str, Any]:
    """Time validate_batch on ``rows`` synthetic lab rows; write the "## Validation" section of ``out_md``."""
    labs, known = synthetic_labs(rows)
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
    _write_section(Path(out_md), result)
    return result


def _write_section(path: Path, result: dict[str, Any]) -> None:
    section = "\n".join([
        SECTION,
        "",
        "Command: `ehr-pipeline bench validate` (calls `pipeline.validate.bench.run_validation_benchmark`).",
        "",
        f"Synthetic labs day, {result['rows']:,} rows over 50,000 known admissions, 0.1 % planted bad rows; "
        "`validate_batch` end to end (schema check, derived columns, GX suite, quarantine assembly, batch checks), "
        "without Data Docs.",
        "",
        "| rows | seconds | rows/s | passed | quarantined | results rows | CPUs | Python |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {result['rows']:,} | {result['seconds']} | {result['rows_per_second']:,} | {result['rows_passed']:,} "
        f"| {result['rows_quarantined']:,} | {result['expectations']} | {result['cpus']} | {result['python']} |",
        "",
    ])
    replace_section(path, section)
