"""A source with planted bad rows ends with exactly those rows (and their dependants) quarantined."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_settings
from pipeline.tasks import nightly
from tests.sources.conftest import ADMISSIONS, DISCHARGE, FILES, LABS, write_folder

D2 = date(2026, 1, 2)
SSN = "531-62-4489"
SSN_NOTE_TEXT = f"Name:  ___\nChief Complaint: shortness of breath\nPatient denies chest pain. SSN {SSN}."

pytestmark = pytest.mark.e2e


def _planted_folder(root: Path) -> Path:
    files: dict[str, str | bytes] = dict(FILES)
    # a duplicate primary key (both rows are quarantined: which one is right is not ours to guess)
    labs = LABS + LABS.splitlines()[2] + "\n"
    # a spreadsheet-mangled timestamp
    labs = labs.replace("4,3,300,14,51222,2026-01-02 05:00:00,,", "4,3,300,14,51222,2026-01-02 05:00:00,10/23/64 21:09,")
    files["hosp/labevents.csv.gz"] = labs
    # discharged before admitted
    files["hosp/admissions.csv.gz"] = ADMISSIONS.replace("2,200,2025-12-30 09:00:00", "2,200,2026-01-02 16:00:00")
    # a note with an SSN, and a note pointing at an unknown admission
    notes = DISCHARGE.replace("Patient denies chest pain.", f"Patient denies chest pain. SSN {SSN}.")
    notes += '9-DS-1,3,999,DS,1,2026-01-02 10:00:00,,"Brief Hospital Course: uneventful."\n'
    # a note set aside at extraction (a byte that is not UTF-8) that also carries an SSN
    notes += f'10-DS-1,1,100,DS,2,2026-01-02 14:00:00,,"Seen in clinic, SSN {SSN}, caf\xe9."\n'
    files["note/discharge.csv.gz"] = notes.encode("latin-1")
    return write_folder(root, files)


def test_planted_bad_rows_are_quarantined_under_named_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(workdir=tmp_path / "w", source_path=_planted_folder(tmp_path / "src"),
                             ner_enabled=False, risk_enabled=False)
    caplog.set_level(logging.DEBUG)
    nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)
    con = duckdb.connect(str(tmp_path / "w" / "warehouse.duckdb"), read_only=True)
    quarantined = set(con.execute("SELECT source_table, record_key, rule FROM ehr.quarantine WHERE ds = ?", [D2]).fetchall())
    assert quarantined == {
        ("labs", "2", "duplicate_key"),
        ("labs", "2", "duplicate_key"),
        ("labs", "4", "unparseable_timestamp"),
        ("admissions", "200", "discharge_before_admission"),
        ("labs", "3", "parent_quarantined"),
        ("diagnoses", "200|1|V4581|9", "parent_quarantined"),
        ("diagnoses", "200|2|04100|9", "parent_quarantined"),
        ("prescriptions", "5002|MAIN|Metformin", "parent_quarantined"),
        ("notes", "2-DS-1", "parent_quarantined"),
        ("notes", "1-DS-1", "phi_suspected"),
        ("notes", "9-DS-1", "unknown_admission"),
        ("notes", "10-DS-1", "invalid_encoding"),
    }
    assert con.execute("SELECT count(*) FROM ehr.quarantine WHERE ds = ? AND source_table = 'labs' AND record_key = '2'",
                       [D2]).fetchone()[0] == 2
    # the rest is loaded
    assert [r[0] for r in con.execute("SELECT hadm_id FROM ehr.admissions WHERE ds = ?", [D2]).fetchall()] == [100]
    assert con.execute("SELECT count(*) FROM ehr.notes WHERE ds = ?", [D2]).fetchone()[0] == 0
    # the PHI rule's detail names the kind of identifier, never the text
    detail = con.execute("SELECT detail FROM ehr.quarantine WHERE rule = 'phi_suspected'").fetchone()[0]
    assert SSN not in detail
    _assert_ssn_nowhere(con, settings, caplog)
    # conservation, recorded per table
    for table, rows_in, rows_out, rows_q in con.execute(
        "SELECT table_name, rows_in, rows_out, rows_quarantined FROM ehr.pipeline_runs WHERE stage = 'validate' AND ds = ?",
        [D2],
    ).fetchall():
        assert rows_in == rows_out + rows_q, table
    labs_run = con.execute("SELECT rows_in, rows_out, rows_quarantined FROM ehr.pipeline_runs "
                           "WHERE stage = 'validate' AND table_name = 'labs' AND ds = ?", [D2]).fetchone()
    assert labs_run == (4, 0, 4)  # labs charted on D2: 2 (twice), 3 and 4
    assert con.execute("SELECT count(*) FROM ehr.validation_results WHERE ds = ?", [D2]).fetchone()[0] > 0


def _assert_ssn_nowhere(con: duckdb.DuckDBPyConnection, settings, caplog: pytest.LogCaptureFixture) -> None:
    """The planted SSN reached no place analysts or operators read: warehouse, lake side tables, docs, logs."""
    for table in ("quarantine", "validation_results", "pipeline_runs"):
        rows = con.execute(f"SELECT * FROM ehr.{table}").fetchall()
        assert rows and SSN not in repr(rows), table
    payloads = dict(con.execute("SELECT record_key, payload FROM ehr.quarantine WHERE source_table = 'notes'").fetchall())
    # the row can still be found and matched: other columns kept, the text as hash and length
    phi = json.loads(payloads["1-DS-1"])
    assert phi["note_id"] == "1-DS-1" and phi["hadm_id"] == 100
    assert phi["text"] == {"sha256": hashlib.sha256(SSN_NOTE_TEXT.encode()).hexdigest(), "chars": len(SSN_NOTE_TEXT)}
    assert set(json.loads(payloads["10-DS-1"])["text"]) == {"sha256", "chars"}
    side_tables = [*settings.lake_dir.glob("*/_*/ds=*/*.parquet")]
    assert {p.parent.parent.name for p in side_tables} >= {"_rejects", "_quarantine", "_results"}
    for path in side_tables:
        assert SSN not in repr(pq.read_table(path).to_pylist()), path
    docs = [p for root in (settings.data_docs_dir, settings.workdir_abs / "gx") for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in docs) and any(p.suffix == ".json" for p in docs)
    for path in docs:
        assert SSN.encode() not in path.read_bytes(), path
    assert caplog.records
    for record in caplog.records:
        assert SSN not in record.getMessage() and SSN not in repr(record.__dict__), record.name
