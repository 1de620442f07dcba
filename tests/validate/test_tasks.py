"""The validate and report tasks around the stage: failed batches leave evidence, counts must add up,
reruns replace run records, an empty day succeeds, and the DAG does not retry bad data."""

from __future__ import annotations

import importlib.util
import json
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

import pipeline.validate
from pipeline import lake, tasks
from pipeline.config import DAGS_DIR, load_settings
from pipeline.contracts import INPUT_TABLES, arrow_schema
from pipeline.warehouse import open_warehouse
from tests.sources.conftest import DISCHARGE, FILES, write_folder

D2 = date(2026, 1, 2)
EMPTY_DAY = date(2026, 1, 5)  # nothing charted, admitted or discharged that day in the tiny source


def _source(root: Path, *, ssn_note: bool = False) -> Path:
    files = dict(FILES)
    if ssn_note:
        files["note/discharge.csv.gz"] = DISCHARGE.replace("denies chest pain.", "denies chest pain. SSN 531-62-4489.")
    return write_folder(root, files)


def _settings(tmp_path: Path, source: Path, **overrides):
    return load_settings(workdir=tmp_path / "w", source_path=source, ner_enabled=False, risk_enabled=False,
                         **overrides)


def _query(settings, sql: str, params: list | None = None) -> list[dict]:
    with open_warehouse(settings.warehouse) as wh:
        return wh.query(sql, params or []).to_pylist()


def test_tasks_failed_batch_keeps_its_evidence_and_replaces_earlier_run_records(tmp_path):
    source = _source(tmp_path / "src", ssn_note=True)
    lenient = _settings(tmp_path, source)
    tasks.run_day(D2, run_id="run-ok", settings=lenient, ner_enabled=False, risk_enabled=False)
    assert {r["status"] for r in _query(lenient, "SELECT status FROM ehr.pipeline_runs WHERE stage = 'validate'")} \
        == {"success"}

    strict = _settings(tmp_path, source, max_quarantine_share=0.0, min_rows_for_share_check=1)
    tasks.extract(D2, run_id="run-strict", settings=strict)
    with pytest.raises(tasks.DataQualityError) as error:
        tasks.validate(D2, run_id="run-strict", settings=strict)
    message = str(error.value)
    assert "E103 table=notes expectation=pipeline:expect_quarantine_share_to_be_at_most: 1 of 2" in message
    assert "Inspect ehr.quarantine for ds=2026-01-02" in message

    # what the message points at is there: this run's quarantine and results for the day
    quarantine = _query(strict, "SELECT source_table, record_key, rule, run_id FROM ehr.quarantine WHERE ds = ?", [D2])
    assert ("notes", "1-DS-1", "phi_suspected", "run-strict") in {tuple(r.values()) for r in quarantine}
    assert {r["run_id"] for r in quarantine} == {"run-strict"}
    results = _query(strict, "SELECT table_name, expectation, success, run_id FROM ehr.validation_results WHERE ds = ?",
                     [D2])
    assert {r["run_id"] for r in results} == {"run-strict"}
    assert {r["table_name"] for r in results} == set(INPUT_TABLES)
    assert {"table_name": "notes", "expectation": "pipeline:expect_quarantine_share_to_be_at_most(0)",
            "success": False, "run_id": "run-strict"} in results

    # the failed rerun replaced every earlier validate row of the day: no stale 'success' survives
    runs = _query(strict, "SELECT table_name, status, run_id, rows_in, rows_out, rows_quarantined, detail "
                          "FROM ehr.pipeline_runs WHERE ds = ? AND stage = 'validate'", [D2])
    assert {r["table_name"] for r in runs} == set(INPUT_TABLES)
    assert {(r["status"], r["run_id"]) for r in runs} == {("failed", "run-strict")}
    notes = next(r for r in runs if r["table_name"] == "notes")
    assert (notes["rows_in"], notes["rows_out"], notes["rows_quarantined"]) == (2, 1, 1)
    assert "E103" in json.loads(notes["detail"])["batch_failures"][0]
    view = _query(strict, "SELECT DISTINCT validate_status, run_id FROM ehr.v_data_quality_daily WHERE ds = ?", [D2])
    assert view == [{"validate_status": "failed", "run_id": "run-strict"}]
    # nothing of the failed batch goes downstream: the lake still holds the lenient run's output
    lake_results = lake.read_partition(strict.lake_dir, tasks.VALIDATED, tasks.RESULTS, D2)
    assert set(lake_results.column("run_id").to_pylist()) == {"run-ok"}


def test_tasks_validate_detects_rows_lost_between_stage_and_lake(tmp_path, monkeypatch):
    settings = _settings(tmp_path, _source(tmp_path / "src"))
    tasks.extract(D2, run_id="run-1", settings=settings)
    real = pipeline.validate.validate_batch

    def loses_a_lab(*args, **kwargs):
        outcome = real(*args, **kwargs)
        # the stage's own books still balance; only the rows handed back are short
        outcome.passed["labs"] = outcome.passed["labs"].slice(1)
        return outcome

    monkeypatch.setattr(pipeline.validate, "validate_batch", loses_a_lab)
    with pytest.raises(tasks.DataQualityError, match=r"rows lost in validation: labs: extracted 3 != passed 2 "
                                                     r"\+ quarantined 0"):
        tasks.validate(D2, run_id="run-1", settings=settings)
    runs = _query(settings, "SELECT table_name, status, detail FROM ehr.pipeline_runs WHERE stage = 'validate'")
    assert [(r["table_name"], r["status"]) for r in runs] == [("all", "failed")]
    assert "rows lost in validation" in runs[0]["detail"]
    assert not lake.list_parts(settings.lake_dir, tasks.VALIDATED, "labs", D2)


def test_tasks_report_checks_conservation_against_the_warehouse(tmp_path):
    settings = _settings(tmp_path, _source(tmp_path / "src"))
    summary = tasks.run_day(D2, run_id="run-1", settings=settings, ner_enabled=False, risk_enabled=False)
    assert summary["data_docs"] == str(settings.data_docs_dir / "index.html")
    assert summary["warehouse_rows"]["admissions"] == 2

    shutil.rmtree(settings.data_docs_dir)  # a report never names docs that are not there
    assert tasks.report(D2, run_id="run-1", settings=settings)["data_docs"] is None

    with open_warehouse(settings.warehouse) as wh:
        wh.execute_script("DELETE FROM ehr.admissions WHERE hadm_id = 200")
    with pytest.raises(tasks.DataQualityError, match=r"admissions: 1 rows in ehr.admissions != rows passed 2"):
        tasks.report(D2, run_id="run-1", settings=settings)

    tasks.load(D2, run_id="run-1", settings=settings)
    tasks.report(D2, run_id="run-1", settings=settings)
    with open_warehouse(settings.warehouse) as wh:
        wh.execute_script("UPDATE ehr.pipeline_runs SET rows_quarantined = 1 "
                          "WHERE stage = 'validate' AND table_name = 'labs'")
    with pytest.raises(tasks.DataQualityError) as error:
        tasks.report(D2, run_id="run-1", settings=settings)
    assert "labs: rows_in 3 != rows_out 3 + rows_quarantined 1" in str(error.value)
    assert "labs: 0 rows in ehr.quarantine != rows quarantined 1" in str(error.value)


def test_tasks_empty_day_after_nightly_history_succeeds_with_zero_rows(tmp_path):
    settings = _settings(tmp_path, _source(tmp_path / "src"))
    # three earlier nightly runs with ten rows passed per table: the volume check is armed
    history = [
        {"run_id": f"run-{d}", "ds": EMPTY_DAY - timedelta(days=d), "stage": "validate", "table_name": name,
         "status": "success", "started_at": datetime(2026, 1, 1), "finished_at": datetime(2026, 1, 1),
         "rows_in": 10, "rows_out": 10, "rows_quarantined": 0, "detail": None}
        for d in (1, 2, 3) for name in INPUT_TABLES
    ]
    with open_warehouse(settings.warehouse) as wh:
        wh.record_runs(pa.Table.from_pylist(history, schema=arrow_schema("pipeline_runs")))

    summary = tasks.run_day(EMPTY_DAY, run_id="run-empty", settings=settings, ner_enabled=False,
                            risk_enabled=False)
    assert all(summary["warehouse_rows"][name] == 0 for name in INPUT_TABLES)
    runs = _query(settings, "SELECT stage, table_name, status, rows_in, rows_out, rows_quarantined, detail "
                            "FROM ehr.pipeline_runs WHERE ds = ?", [EMPTY_DAY])
    assert {r["stage"] for r in runs} == {"extract", "validate", "load", "report"}
    assert all(r["status"] == "success" for r in runs)
    validate_runs = [r for r in runs if r["stage"] == "validate"]
    assert len(validate_runs) == len(INPUT_TABLES)
    for run in validate_runs:
        assert (run["rows_in"], run["rows_out"], run["rows_quarantined"]) == (0, 0, 0)
        assert json.loads(run["detail"])["warnings"][0].startswith("W101 ds=2026-01-05: no records at all")
    volume = _query(settings, "SELECT table_name, success FROM ehr.validation_results "
                              "WHERE ds = ? AND expectation LIKE 'pipeline:expect_row_count_near_trailing_median%'",
                    [EMPTY_DAY])
    assert sorted(volume, key=lambda r: r["table_name"]) == [
        {"table_name": name, "success": False} for name in sorted(INPUT_TABLES)]  # recorded, not hidden


def _load_dag_module(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    spec = importlib.util.spec_from_file_location("ehr_nightly_under_test", DAGS_DIR / "ehr_nightly.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "_ds", lambda: D2)
    monkeypatch.setattr(module, "_run_id", lambda: "manual__test")
    return module


@pytest.mark.parametrize("task_id", ["validate", "report"])
def test_tasks_dag_fails_bad_data_without_retry(monkeypatch, tmp_path, task_id):
    from airflow.sdk.exceptions import AirflowFailException

    module = _load_dag_module(monkeypatch, tmp_path)
    callable_ = module.dag.get_task(task_id).python_callable

    def bad_data(*_args, **_kwargs):
        raise tasks.DataQualityError("E103 table=notes ...")

    monkeypatch.setattr(tasks, task_id, bad_data)
    with pytest.raises(AirflowFailException, match="E103 table=notes"):
        callable_()

    def transient(*_args, **_kwargs):
        raise tasks.PipelineError("warehouse unreachable")

    monkeypatch.setattr(tasks, task_id, transient)
    with pytest.raises(tasks.PipelineError, match="unreachable"):  # left to Airflow's retries
        callable_()
