"""Which day a row belongs to when its deciding timestamp is unreadable, and that no row is ever lost.

The rule (pipeline/sources/base.py): a witness recorded at or after the deciding event dates the row;
a row no witness dates is set aside once, on the source's first day.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.contracts import INPUT_TABLES
from pipeline.sources import extract_range, open_source, read_all
from pipeline.sources.base import ExtractResult, _parse, _record_keys
from pipeline.synth import generate
from tests.sources.conftest import ADMISSIONS, DIAGNOSES, DISCHARGE, FILES, LABS, write_folder

D1, D2, D3, D9 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3), date(2026, 1, 9)
DAYS = [D1 + timedelta(days=i) for i in range(12)]


def _runs(folder: Path, layout: str = "mimic4") -> dict[date, ExtractResult]:
    """One nightly extraction per day."""
    return {day: extract_range(open_source(layout, folder), day) for day in DAYS}


def _where(runs: dict[date, ExtractResult], table: str, key: str) -> list[tuple[date, str]]:
    """(day, 'typed' or the set-aside rule) of every run that reported the row."""
    seen = []
    for day, result in runs.items():
        typed = result.tables[table]
        if key in _record_keys(typed, table).to_pylist():
            seen.append((day, "typed"))
        for r in result.rejects.to_pylist():
            if r["source_table"] == table and r["record_key"] == key:
                seen.append((r["ds"], r["rule"]))
    return seen


def _folder(tmp_path: Path, **replacements: str) -> Path:
    files = dict(FILES)
    for rel, text in replacements.items():
        files[rel] = text
    return write_folder(tmp_path / "src", files)


def test_days_mangled_dischtime_is_dated_by_the_discharge_note(tmp_path: Path) -> None:
    adm = ADMISSIONS.replace("2026-01-01 09:00:00,2026-01-03 11:00:00", "2026-01-01 09:00:00,1/3/26 11:00")
    runs = _runs(_folder(tmp_path, **{"hosp/admissions.csv.gz": adm}))
    # set aside on its discharge day (its note's), not on its admission day, which a nightly run did earlier
    assert _where(runs, "admissions", "300") == [(D3, "unparseable_timestamp")]
    # what hangs off it arrives on the same day, where validation finds its parent set aside
    assert _where(runs, "diagnoses", "300|1|N179|10") == [(D3, "typed")]
    assert _where(runs, "notes", "3-DS-1") == [(D3, "typed")]
    # before that it is an open stay, so its labs charted meanwhile have a known admission
    assert 300 in runs[D2].open_admissions.column("hadm_id").to_pylist()
    assert _where(runs, "labs", "4") == [(D2, "typed")]
    detail = next(r["detail"] for r in runs[D3].rejects.to_pylist() if r["record_key"] == "300")
    assert "dischtime" in detail


def test_days_death_time_witnesses_the_discharge(tmp_path: Path) -> None:
    adm = ADMISSIONS.replace("2025-12-30 09:00:00,2026-01-02 15:30:00,,",
                             "2025-12-30 09:00:00,02/01/2026 15:30,2026-01-02 15:30:00,")
    notes = "\n".join(line for line in DISCHARGE.split("\n") if not line.startswith("2-DS-1"))
    runs = _runs(_folder(tmp_path, **{"hosp/admissions.csv.gz": adm, "note/discharge.csv.gz": notes}))
    assert _where(runs, "admissions", "200") == [(D2, "unparseable_timestamp")]


def test_days_undatable_admission_is_reported_once_on_the_first_day(tmp_path: Path) -> None:
    adm = ADMISSIONS.replace("2026-01-01 09:00:00,2026-01-03 11:00:00", "2026-01-01 09:00:00,1/3/26 11:00")
    notes = "\n".join(line for line in DISCHARGE.split("\n") if not line.startswith("3-DS-1"))
    runs = _runs(_folder(tmp_path, **{"hosp/admissions.csv.gz": adm, "note/discharge.csv.gz": notes}))
    # no discharge time, death or note: the source's first day (earliest discharge, D2) reports it, once
    assert _where(runs, "admissions", "300") == [(D2, "unparseable_timestamp")]
    assert _where(runs, "diagnoses", "300|1|N179|10") == [(D2, "typed")]  # follows its admission
    assert all(r.undatable_day == D2 for r in runs.values())
    assert all(r.counts()["admissions"]["rows_unattributed"] == 1 for r in runs.values())
    detail = next(r["detail"] for r in runs[D2].rejects.to_pylist() if r["record_key"] == "300")
    assert "source's first day 2026-01-02" in detail


def test_days_labs_fall_back_on_storetime_then_admission_never_earlier(tmp_path: Path) -> None:
    labs = LABS + "\n".join([
        # charttime mangled, storetime readable: the storetime's day
        "5,1,101,15,50912,1/3/26 06:00,2026-01-04 07:00:00,1.0,1.0,mg/dL,0.5,1.2,,ROUTINE,",
        # charttime mangled, no storetime: its admission's (discharge) day, D9, never its admission day
        "6,1,101,16,50912,1/3/26 06:00,,1.0,1.0,mg/dL,0.5,1.2,,ROUTINE,",
        # outpatient (no admission), charttime mangled, no storetime: nothing dates it
        "7,2,,17,50912,1/3/26 06:00,,1.0,1.0,mg/dL,0.5,1.2,,ROUTINE,",
        # no charttime at all, admission not in the source: nothing dates it either
        "8,2,999,18,50912,,,1.0,1.0,mg/dL,0.5,1.2,,ROUTINE,",
    ]) + "\n"
    runs = _runs(_folder(tmp_path, **{"hosp/labevents.csv.gz": labs}))
    assert _where(runs, "labs", "5") == [(date(2026, 1, 4), "unparseable_timestamp")]
    assert _where(runs, "labs", "6") == [(D9, "unparseable_timestamp")]
    assert _where(runs, "labs", "7") == [(D2, "unparseable_timestamp")]
    assert _where(runs, "labs", "8") == [(D2, "undatable_row")]
    assert all(r.counts()["labs"]["rows_unattributed"] == 2 for r in runs.values())


def test_days_orphan_diagnosis_is_set_aside_not_dropped(tmp_path: Path) -> None:
    dx = DIAGNOSES + "9,999,1,I10,10\n"
    runs = _runs(_folder(tmp_path, **{"hosp/diagnoses_icd.csv.gz": dx}))
    assert _where(runs, "diagnoses", "999|1|I10|10") == [(D2, "undatable_row")]


def test_days_stay_without_discharge_time_is_open_not_lost(tmp_path: Path) -> None:
    adm = ADMISSIONS + "3,400,2026-01-02 09:00:00,,,URGENT,P3,TRANSFER FROM HOSPITAL,,Medicaid,ENGLISH,,WHITE,,,0\n"
    labs = LABS + "9,3,400,19,51222,2026-01-03 05:00:00,,10.1,10.1,g/dL,12,16,abnormal,ROUTINE,\n"
    dx = DIAGNOSES + "3,400,1,N179,10\n"
    runs = _runs(_folder(tmp_path, **{"hosp/admissions.csv.gz": adm, "hosp/labevents.csv.gz": labs,
                                      "hosp/diagnoses_icd.csv.gz": dx}))
    assert _where(runs, "admissions", "400") == []  # still in hospital: extracted on the day it is discharged
    assert _where(runs, "labs", "9") == [(D3, "typed")]  # charted: due on its own day
    assert all(400 in runs[d].open_admissions.column("hadm_id").to_pylist() for d in DAYS[1:])
    assert all(r.counts()["admissions"]["rows_not_yet_due"] == 1 for r in runs.values())
    assert all(r.counts()["diagnoses"]["rows_not_yet_due"] == 1 for r in runs.values())


@pytest.mark.parametrize(
    ("text", "ok"),
    [("9223372036854775807", True), ("9223372036854775808", False), ("-9223372036854775808", True),
     ("-9223372036854775809", False), ("0009223372036854775807", True), ("12345678901234567890", False),
     ("+42", True), ("4 2", False), ("", True)],
)
def test_days_int64_bounds_are_exact(text: str, ok: bool) -> None:
    values, bad = _parse(pa.array([text]), "int64")
    assert bad.to_pylist() == [not ok]
    if ok and text:
        assert values.to_pylist() == [int(text)]


def test_days_oversized_integer_is_set_aside_not_a_crash(tmp_path: Path) -> None:
    adm = ADMISSIONS.replace("\n2,200,", "\n12345678901234567890,200,")
    labs = LABS.replace("\n3,2,200,", "\n99999999999999999999,2,200,")
    result = extract_range(open_source("mimic4", _folder(
        tmp_path, **{"hosp/admissions.csv.gz": adm, "hosp/labevents.csv.gz": labs})), D2)
    found = {(r["source_table"], r["record_key"]): (r["rule"], r["detail"]) for r in result.rejects.to_pylist()}
    assert found[("admissions", "200")] == ("unparseable_number", "column subject_id: not a whole number that fits in 64 bits")
    assert found[("labs", "99999999999999999999")][0] == "unparseable_number"
    assert result.tables["admissions"].column("hadm_id").to_pylist() == [100]


# --- nothing lost: every source row is reported exactly once across the nightly runs ---------------
KEY_COLUMNS = {"admissions": "hadm_id", "diagnoses": None, "labs": "labevent_id", "prescriptions": "prescription_id",
               "notes": "note_id"}


@pytest.mark.parametrize("layout", ["mimic4", "mimic3"])
def test_days_every_row_reported_exactly_once_across_nightly_runs(tmp_path: Path, layout: str) -> None:
    start = date(2026, 1, 1)
    folder = tmp_path / layout
    generate(folder, layout=layout, patients=40, start=start, days=2, history_days=15, seed=21, messy=True)
    reader = open_source(layout, folder)
    source = {name: read_all(reader, name) for name in INPUT_TABLES if name != "patients"}
    # the reader itself drops nothing: its row counts are the files' (counted independently by DuckDB)
    con = duckdb.connect()
    files = {p.name.lower().split(".")[0]: p for p in folder.rglob("*.csv*")}
    for name, stem in (("admissions", "admissions"), ("labs", "labevents"), ("notes", "discharge" if layout ==
                       "mimic4" else "noteevents"), ("diagnoses", "diagnoses_icd"), ("prescriptions", "prescriptions")):
        n = con.sql(f"select count(*) from read_csv('{files[stem]}', all_varchar=true, header=true)").fetchall()[0][0]
        assert source[name].num_rows == n, name
    expected = {name: Counter(_record_keys(raw, name).to_pylist()) for name, raw in source.items()}

    # from the earliest lab (of stays admitted before the first discharge day) to the latest discharge (of
    # stays still open at the window's end)
    times = pa.concat_arrays([_parse(source[t].column(c), "timestamp")[0]
                              for t, c in (("labs", "charttime"), ("admissions", "dischtime"), ("notes", "charttime"))])
    bounds = pc.min_max(times)
    first, last = bounds["min"].as_py().date(), max(bounds["max"].as_py().date(), start + timedelta(days=1))
    nightly: dict[str, Counter] = {name: Counter() for name in expected}
    planted: Counter = Counter()
    day = first
    while day <= last:
        result = extract_range(open_source(layout, folder), day)
        for name in expected:
            nightly[name].update(_record_keys(result.tables[name], name).to_pylist())
            rejected = result.rejects.filter(pc.equal(result.rejects.column("source_table"), name))
            nightly[name].update(rejected.column("record_key").to_pylist())
            planted.update(rejected.column("rule").to_pylist())
            assert result.counts()[name]["rows_not_yet_due"] == 0
        day += timedelta(days=1)
    for name in expected:
        assert nightly[name] == expected[name], name
    # the planted defects were set aside under their rules (not typed, not lost)
    assert planted["unparseable_timestamp"] >= 2 and planted["unparseable_number"] >= 1
    assert planted["undatable_row"] >= 1

    # a backfill over the whole range reports the same rows, once each
    bulk = extract_range(open_source(layout, folder), first, last)
    for name in expected:
        keys = Counter(_record_keys(bulk.tables[name], name).to_pylist())
        rejected = bulk.rejects.filter(pc.equal(bulk.rejects.column("source_table"), name))
        keys.update(rejected.column("record_key").to_pylist())
        assert keys == expected[name], name
