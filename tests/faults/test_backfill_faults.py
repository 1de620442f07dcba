"""A malformed source row during a history seed, end to end through the CLI: ``ehr-pipeline backfill --bulk``
over a small hand-written MIMIC-IV folder with one labs row of the wrong field count. The seed succeeds, the row
is quarantined by file and line (never by its content), every other row is loaded, and a rerun does nothing."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import cli
from pipeline.config import load_settings
from pipeline.warehouse import open_warehouse
from tests.sources.conftest import FILES, LABS, write_folder

START, END = date(2025, 12, 1), date(2026, 1, 31)  # two month chunks around every row of the folder
MARKER = "531-62-4489"  # in the malformed row only: it must reach no table
# 16 fields against the header's 15 (a stray comma in the comment), dated inside the range; line 4 of the file
BAD_LAB = f"5,1,100,15,50912,2026-01-02 06:00:00,,1.3,1.3,mg/dL,0.5,1.2,,ROUTINE,call back re {MARKER},today\n"
_HEADER, _FIRST_TWO, _REST = LABS.split("\n", 1)[0], LABS.split("\n")[1:3], LABS.split("\n", 3)[3]
BAD_LABS = "\n".join([_HEADER, *_FIRST_TWO]) + "\n" + BAD_LAB + _REST
# warehouse table → the source file whose data rows must all load (one line a row)
LOADED = {"patients": "hosp/patients.csv.gz", "admissions": "hosp/admissions.csv.gz",
          "diagnoses": "hosp/diagnoses_icd.csv.gz", "labs": "hosp/labevents.csv.gz",
          "prescriptions": "hosp/prescriptions.csv.gz"}
NOTES_IN_SOURCE = 3  # the discharge file's records (its texts span several lines)


def _data_rows(text: str) -> int:
    return len(text.strip("\n").split("\n")) - 1


def _backfill(workdir: Path):
    return CliRunner().invoke(cli.app, ["backfill", "--workdir", str(workdir), "--start", START.isoformat(),
                                        "--end", END.isoformat(), "--bulk"])


def _state(settings) -> dict[str, object]:
    with open_warehouse(settings.warehouse) as wh:
        counts = {t: wh.query(f"SELECT count(*) AS n FROM ehr.{t}").column("n")[0].as_py()
                  for t in (*LOADED, "notes", "quarantine")}
        # every column, run ids and timestamps too: a rerun that rewrote a record would show
        runs = wh.query("SELECT * FROM ehr.pipeline_runs ORDER BY stage, ds, table_name").to_pylist()
        quarantine = wh.query("SELECT * FROM ehr.quarantine").to_pylist()
    return {"counts": counts, "runs": runs, "quarantine": quarantine}


@pytest.mark.slow
def test_faults_backfill_bulk_quarantines_a_malformed_row_loads_the_rest_and_reruns_as_a_no_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {**FILES, "hosp/labevents.csv.gz": BAD_LABS}
    assert _data_rows(BAD_LABS) == _data_rows(LABS) + 1 and BAD_LAB.count(",") == LABS.split("\n")[0].count(",") + 1
    source = write_folder(tmp_path / "src", files)
    monkeypatch.setenv("EHR_SOURCE_PATH", str(source))
    workdir = tmp_path / "w"

    first = _backfill(workdir)
    assert first.exit_code == 0, first.output
    assert "1 chunk(s) done, 0 already done, 0 failed" in first.output  # December has no rows: not planned
    settings = load_settings(workdir=workdir, source_path=source)
    state = _state(settings)

    # the malformed row: quarantined once, by file and line, its content nowhere
    assert [(q["source_table"], q["rule"]) for q in state["quarantine"]] == [("labs", "malformed_row")]
    quarantined = state["quarantine"][0]
    labs_file = source / "hosp" / "labevents.csv.gz"
    assert quarantined["ds"] == date(2026, 1, 2) and quarantined["record_key"] == "record 4"
    assert f"{labs_file} line 4" in quarantined["detail"] and "16 fields, the header has 15" in quarantined["detail"]
    stored = json.dumps([state["runs"], state["quarantine"]], default=str)
    assert MARKER not in stored and "call back" not in stored

    # every other row of the source loaded
    for table, rel in LOADED.items():
        want = _data_rows(files[rel]) - (1 if table == "labs" else 0)
        assert state["counts"][table] == want, (table, state["counts"][table], want)
    assert state["counts"]["notes"] == NOTES_IN_SOURCE
    assert {r["status"] for r in state["runs"]} <= {"success", "skipped"}

    # the same command again: nothing planned, nothing written, the same warehouse
    second = _backfill(workdir)
    assert second.exit_code == 0, second.output
    assert "0 chunk(s) done, 1 already done, 0 failed" in second.output
    assert _state(settings) == state
