"""Small Arrow fixtures in the canonical schemas (schemas/tables/*.yaml) for validation tests."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from pipeline.contracts import INPUT_TABLES, arrow_schema
from pipeline.validate import ValidationConfig, validate_batch

DS = date(2150, 3, 14)
RUN_ID = "run-test"
ADMIT = datetime(2150, 3, 10, 8, 0)
DISCH = datetime(2150, 3, 14, 12, 0)
CLEAN_NOTE = (
    "Name: ___ Unit No: ___ Admission Date: ___ Discharge Date: ___\n"
    "Chief complaint: dyspnea. Furosemide 40 mg PO daily. Cr 1.2, K 4.1. BP 120/80, HR 88 at 06:10AM.\n"
    "Seen by Dr. ___ on [**2151-3-4**] at [** Hospital 1234 **]."
)


def schema(table: str) -> pa.Schema:
    return arrow_schema(table)


def make_table(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (dicts; missing columns are null) as an Arrow table in the canonical schema."""
    target = schema(table)
    names = target.names
    filled = [{name: row.get(name) for name in names} for row in rows]
    return pa.Table.from_pylist(filled, schema=pa.schema([f.with_nullable(True) for f in target]))


def patient(subject_id: int | None, **overrides: Any) -> dict[str, Any]:
    row = {"subject_id": subject_id, "gender": "F", "anchor_age": 60, "anchor_year": 2150,
           "anchor_year_group": "2017 - 2019", "dod": None, "ds": DS}
    row.update(overrides)
    return row


def admission(hadm_id: int | None, subject_id: int | None = 1, **overrides: Any) -> dict[str, Any]:
    row = {"subject_id": subject_id, "hadm_id": hadm_id, "admittime": ADMIT, "dischtime": DISCH,
           "deathtime": None, "admission_type": "EW EMER.", "admission_location": "EMERGENCY ROOM",
           "discharge_location": "HOME", "insurance": "Medicare", "language": "ENGLISH",
           "marital_status": "MARRIED", "race": "WHITE", "edregtime": None, "edouttime": None,
           "hospital_expire_flag": 0, "ds": DS}
    row.update(overrides)
    return row


def diagnosis(hadm_id: int | None, seq_num: int | None, icd_code: str = "4019", icd_version: int = 9,
              subject_id: int = 1, **overrides: Any) -> dict[str, Any]:
    row = {"subject_id": subject_id, "hadm_id": hadm_id, "seq_num": seq_num, "icd_code": icd_code,
           "icd_version": icd_version, "ds": DS}
    row.update(overrides)
    return row


def procedure(hadm_id: int | None, seq_num: int | None, icd_code: str = "3893", icd_version: int = 9,
              subject_id: int = 1, **overrides: Any) -> dict[str, Any]:
    row = {"subject_id": subject_id, "hadm_id": hadm_id, "seq_num": seq_num, "chartdate": ADMIT.date(),
           "icd_code": icd_code, "icd_version": icd_version,
           "long_title": "Venous catheterization, not elsewhere classified", "ds": DS}
    row.update(overrides)
    return row


def icu_stay(stay_id: int | None, hadm_id: int | None = 100, subject_id: int = 1, **overrides: Any) -> dict[str, Any]:
    row = {"stay_id": stay_id, "subject_id": subject_id, "hadm_id": hadm_id,
           "first_careunit": "Medical Intensive Care Unit (MICU)", "last_careunit": "Medical Intensive Care Unit (MICU)",
           "intime": ADMIT + timedelta(hours=2), "outtime": ADMIT + timedelta(hours=30), "los": 1.1667, "ds": DS}
    row.update(overrides)
    return row


def lab(labevent_id: int | None, hadm_id: int | None = 100, subject_id: int = 1, **overrides: Any) -> dict[str, Any]:
    row = {"labevent_id": labevent_id, "subject_id": subject_id, "hadm_id": hadm_id, "specimen_id": 7,
           "itemid": 50912, "charttime": datetime(2150, 3, 14, 6, 10), "storetime": None, "value": "1.2",
           "valuenum": 1.2, "valueuom": "mg/dL", "ref_range_lower": 0.5, "ref_range_upper": 1.1,
           "flag": "abnormal", "priority": "ROUTINE", "comments": None, "ds": DS}
    row.update(overrides)
    return row


def prescription(prescription_id: int | None, hadm_id: int | None = 100, subject_id: int = 1,
                 **overrides: Any) -> dict[str, Any]:
    row = {"prescription_id": prescription_id, "subject_id": subject_id, "hadm_id": hadm_id,
           "starttime": ADMIT, "stoptime": DISCH, "drug_type": "MAIN", "drug": "Furosemide",
           "ndc": "00054829725", "prod_strength": "40mg Tablet", "dose_val_rx": "40",
           "dose_unit_rx": "mg", "route": "PO", "ds": DS}
    row.update(overrides)
    return row


def note(note_id: str | None, hadm_id: int | None = 100, subject_id: int = 1, text: str | None = CLEAN_NOTE,
         **overrides: Any) -> dict[str, Any]:
    row = {"note_id": note_id, "subject_id": subject_id, "hadm_id": hadm_id, "note_type": "DS",
           "note_seq": 1, "charttime": DISCH, "storetime": DISCH + timedelta(hours=2), "text": text, "ds": DS}
    row.update(overrides)
    return row


def base_batch() -> dict[str, list[dict[str, Any]]]:
    """A clean day: two patients, two admissions, and a few dependents of each."""
    return {
        "patients": [patient(1), patient(2, gender="M", anchor_age=91)],
        "admissions": [admission(100, 1), admission(200, 2, admission_type="EMERGENCY")],
        "diagnoses": [diagnosis(100, 1, "4019", 9), diagnosis(100, 2, "V1582", 9),
                      diagnosis(200, 1, "I10", 10), diagnosis(200, 2, "E1122", 10)],
        "labs": [lab(1, 100), lab(2, 200, subject_id=2), lab(3, None, valuenum=None, value="neg")],
        "procedures": [procedure(100, 1), procedure(200, 1, "02HV33Z", 10, subject_id=2)],
        "prescriptions": [prescription(1, 100), prescription(2, 200, subject_id=2)],
        "icu_stays": [icu_stay(300, 100)],
        "notes": [note("1-DS-1", 100), note("2-DS-1", 200, subject_id=2)],
    }


def to_tables(rows: dict[str, list[dict[str, Any]]]) -> dict[str, pa.Table]:
    return {name: make_table(name, rows.get(name, [])) for name in INPUT_TABLES}


def known_admissions(rows: list[dict[str, Any]] | None = None) -> pa.Table:
    rows = rows or []
    columns = ("hadm_id", "subject_id", "admittime", "dischtime")
    return pa.Table.from_pylist(rows, schema=pa.schema([schema("admissions").field(c) for c in columns]))


def run(rows: dict[str, list[dict[str, Any]]] | None = None, *, tables: dict[str, pa.Table] | None = None,
        config: ValidationConfig | None = None, **kwargs: Any):
    """validate_batch on fixture rows with warn mode and no batch thresholds unless asked."""
    tables = tables if tables is not None else to_tables(rows if rows is not None else base_batch())
    kwargs.setdefault("pre_quarantine", None)
    kwargs.setdefault("known_admissions", known_admissions())
    kwargs.setdefault("known_subject_ids", pa.array([], pa.int64()))
    kwargs.setdefault("trailing_volumes", {})
    config = config or ValidationConfig(on_batch_failure="warn", min_rows_for_share_check=10_000)
    return validate_batch(tables, ds=DS, run_id=RUN_ID, config=config, **kwargs)


def quarantined(outcome, table: str) -> dict[str, str]:
    """record_key -> rule of the quarantine rows of one table."""
    q = outcome.quarantine.filter(pa.compute.equal(outcome.quarantine["source_table"], table))
    return dict(zip(q["record_key"].to_pylist(), q["rule"].to_pylist(), strict=True))


def assert_conserved(outcome, tables: dict[str, pa.Table] | None = None) -> None:
    for name, numbers in outcome.counts.items():
        assert numbers["rows_in"] == numbers["rows_passed"] + numbers["rows_quarantined"], name
        assert outcome.passed[name].num_rows == numbers["rows_passed"], name
        if tables is not None:
            assert numbers["rows_in"] >= tables[name].num_rows


@pytest.fixture
def clean_rows() -> dict[str, list[dict[str, Any]]]:
    return base_batch()
