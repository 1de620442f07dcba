"""Synthetic tables of one day in the canonical Arrow schemas, built column-wise (no per-row Python), for the
benchmarks and tests that need many rows quickly rather than a coherent patient history (that is ``generate``).

>>> import datetime as dt
>>> notes = notes_table(["Denies chest pain.", "CXR: pneumonia."], dt.date(2150, 1, 1), id_prefix="n")
>>> notes.column("note_id").to_pylist(), notes.num_columns
(['n-0', 'n-1'], 9)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pipeline.contracts import arrow_schema

ENTITY_LABELS = np.array(["PROBLEM", "MEDICATION", "TEST", "PROCEDURE", "ANATOMY"])
ENTITY_SECTIONS = np.array(
    ["history of present illness", "past medical history", "assessment and plan", "medications"]
)
ENTITY_TERMS = np.array(
    ["pneumonia", "atrial fibrillation", "metoprolol", "chest x-ray", "acute kidney injury", "sepsis"]
)
_US_PER_DAY = 86_400_000_000


def notes_table(texts: Sequence[str | None], ds: dt.date, id_prefix: str = "note") -> pa.Table:
    """A validated ``notes`` table holding ``texts``: one discharge summary per admission, charted at noon."""
    n = len(texts)
    ids = np.arange(n, dtype=np.int64)
    columns = {
        "note_id": pa.array(np.char.add(f"{id_prefix}-", ids.astype(str)) if n else [], pa.string()),
        "subject_id": pa.array(ids),
        "hadm_id": pa.array(ids),
        "note_type": pa.array(np.full(n, "DS")),
        "note_seq": pa.array(np.ones(n, dtype=np.int32)),
        "charttime": pa.array(np.full(n, np.datetime64(dt.datetime.combine(ds, dt.time(12)), "s"))),
        "storetime": pa.nulls(n),
        "text": pa.array(list(texts), pa.string()),
        "ds": pa.array(np.full(n, np.datetime64(ds.isoformat(), "D"))),
    }
    schema = arrow_schema("notes")
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)


def labs_day(rows: int, ds: dt.date, admissions: int = 50_000, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    """``rows`` lab results charted on ``ds`` over ``admissions`` known admissions, 0.1 % of them bad (half
    with a non-finite value, half naming an unknown admission), 20 % outpatient; and the known admissions."""
    rng = np.random.default_rng(seed)
    day_start = np.datetime64(ds.isoformat(), "us")
    hadm_ids = np.arange(20_000_000, 20_000_000 + admissions, dtype=np.int64)
    subject_of = np.arange(10_000_000, 10_000_000 + admissions, dtype=np.int64)
    pick = rng.integers(0, admissions, rows)
    hadm = hadm_ids[pick]
    valuenum = rng.normal(1.0, 0.3, rows)
    bad = rng.choice(rows, size=max(rows // 1000, 1), replace=False)
    valuenum[bad[: len(bad) // 2]] = np.nan  # non_finite_value
    hadm[bad[len(bad) // 2 :]] = 1  # unknown_admission
    outpatient = rng.random(rows) < 0.2
    charttime = day_start + rng.integers(0, _US_PER_DAY, rows).astype("timedelta64[us]")
    labs = pa.table({
        "labevent_id": pa.array(np.arange(rows, dtype=np.int64)),
        "subject_id": pa.array(subject_of[pick]),
        "hadm_id": pa.array(hadm, mask=outpatient),
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
        "ds": pa.array(np.full(rows, ds), pa.date32()),
    })
    admit = day_start - np.timedelta64(4 * _US_PER_DAY, "us")
    known = pa.table({
        "hadm_id": pa.array(hadm_ids), "subject_id": pa.array(subject_of),
        "admittime": pa.array(np.full(admissions, admit)),
        "dischtime": pa.array(np.full(admissions, admit + np.timedelta64(5 * _US_PER_DAY, "us"))),
    })
    return labs, known


def note_entities_day(rows: int, ds: dt.date, seed: int = 0) -> pa.Table:
    """``rows`` ``note_entities`` rows of ``ds`` (8 entities per note, 3 notes per admission)."""
    rng = np.random.default_rng(seed)
    index = np.arange(rows, dtype=np.int64)
    note_no = index // 8
    start = (index % 8).astype(np.int32) * 40 + rng.integers(0, 30, rows, dtype=np.int32)
    term = rng.integers(0, len(ENTITY_TERMS), rows)
    text = ENTITY_TERMS[term]
    flags = rng.random((5, rows)) < np.array([[0.2], [0.05], [0.1], [0.03], [0.02]])
    columns: dict[str, pa.Array] = {
        "note_id": pa.array(np.char.add("bench-", note_no.astype(str))),
        "subject_id": pa.array(10_000_000 + note_no // 3),
        "hadm_id": pa.array(20_000_000 + note_no // 2),
        "ds": pa.array(np.full(rows, np.datetime64(ds.isoformat(), "D"))),
        "label": pa.array(ENTITY_LABELS[term % len(ENTITY_LABELS)]),
        "text": pa.array(text),
        "start_char": pa.array(start),
        "end_char": pa.array(start + np.char.str_len(text).astype(np.int32)),
        "section": pa.array(ENTITY_SECTIONS[rng.integers(0, len(ENTITY_SECTIONS), rows)]),
        "score": pa.array(rng.random(rows)),
        "is_negated": pa.array(flags[0]),
        "is_uncertain": pa.array(flags[1]),
        "is_historical": pa.array(flags[2]),
        "is_family": pa.array(flags[3]),
        "is_hypothetical": pa.array(flags[4]),
        "model_name": pa.array(np.full(rows, "bench-ner")),
        "model_version": pa.array(np.full(rows, "1.0.0")),
        "run_id": pa.array(np.full(rows, f"bench__{ds.isoformat()}")),
    }
    schema = arrow_schema("note_entities")
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)
