"""A source with planted bad rows ends with exactly those rows (and their dependants) quarantined."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb

from pipeline import tasks
from pipeline.config import load_settings
from tests.sources.conftest import ADMISSIONS, DISCHARGE, FILES, LABS, write_folder

D2 = date(2026, 1, 2)


def _planted_folder(root: Path) -> Path:
    files = dict(FILES)
    # a duplicate primary key (both rows are quarantined: which one is right is not ours to guess)
    labs = LABS + LABS.splitlines()[2] + "\n"
    # a spreadsheet-mangled timestamp
    labs = labs.replace("4,3,300,14,51222,2026-01-02 05:00:00,,", "4,3,300,14,51222,2026-01-02 05:00:00,10/23/64 21:09,")
    files["hosp/labevents.csv.gz"] = labs
    # discharged before admitted
    files["hosp/admissions.csv.gz"] = ADMISSIONS.replace("2,200,2025-12-30 09:00:00", "2,200,2026-01-02 16:00:00")
    # a note with an SSN, and a note pointing at an unknown admission
    notes = DISCHARGE.replace("Patient denies chest pain.", "Patient denies chest pain. SSN 531-62-4489.")
    notes += '9-DS-1,3,999,DS,1,2026-01-02 10:00:00,,"Brief Hospital Course: uneventful."\n'
    files["note/discharge.csv.gz"] = notes
    return write_folder(root, files)


def test_planted_bad_rows_are_quarantined_under_named_rules(tmp_path: Path) -> None:
    settings = load_settings(workdir=tmp_path / "w", source_path=_planted_folder(tmp_path / "src"),
                             ner_enabled=False, risk_enabled=False)
    tasks.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)
    con = duckdb.connect(str(tmp_path / "w" / "warehouse.duckdb"), read_only=True)
    quarantined = set(con.execute("SELECT source_table, record_key, rule FROM ehr.quarantine WHERE ds = ?", [D2]).fetchall())
    assert quarantined == {
        ("labs", "2", "duplicate_key"),
        ("labs", "2", "duplicate_key"),
        ("labs", "4", "unparseable_timestamp"),
        ("admissions", "200", "discharge_before_admission"),
        ("labs", "3", "parent_quarantined"),
        ("diagnoses", "200|1", "parent_quarantined"),
        ("diagnoses", "200|2", "parent_quarantined"),
        ("prescriptions", "5002", "parent_quarantined"),
        ("notes", "2-DS-1", "parent_quarantined"),
        ("notes", "1-DS-1", "phi_suspected"),
        ("notes", "9-DS-1", "unknown_admission"),
    }
    assert con.execute("SELECT count(*) FROM ehr.quarantine WHERE ds = ? AND source_table = 'labs' AND record_key = '2'",
                       [D2]).fetchone()[0] == 2
    # the rest is loaded
    assert [r[0] for r in con.execute("SELECT hadm_id FROM ehr.admissions WHERE ds = ?", [D2]).fetchall()] == [100]
    assert con.execute("SELECT count(*) FROM ehr.notes WHERE ds = ?", [D2]).fetchone()[0] == 0
    # the PHI rule's detail names the kind of identifier, never the text
    detail = con.execute("SELECT detail FROM ehr.quarantine WHERE rule = 'phi_suspected'").fetchone()[0]
    assert "531-62-4489" not in detail
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
