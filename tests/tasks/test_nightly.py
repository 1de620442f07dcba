"""The nightly tasks (pipeline/tasks/nightly.py): failed batches leave evidence, counts must add up, reruns
replace run records, an empty day succeeds, the DAG does not retry bad data, and the part tasks share
one map-over-part helper that checks before any work and records every run."""

from __future__ import annotations

import importlib.util
import json
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.validate
from pipeline import lake
from pipeline.config import DAGS_DIR, load_settings
from pipeline.contracts import INPUT_TABLES, arrow_schema
from pipeline.tasks import nightly
from pipeline.tasks.runs import DataQualityError, PipelineError
from pipeline.warehouse import open_warehouse
from tests.sources.conftest import DISCHARGE, FILES, write_folder
from tests.tasks.conftest import SQL_SOURCE, SourceOpened, make_notes

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


def test_nightly_failed_batch_keeps_its_evidence_and_replaces_earlier_run_records(tmp_path):
    source = _source(tmp_path / "src", ssn_note=True)
    lenient = _settings(tmp_path, source)
    nightly.run_day(D2, run_id="run-ok", settings=lenient, ner_enabled=False, risk_enabled=False)
    assert {r["status"] for r in _query(lenient, "SELECT status FROM ehr.pipeline_runs WHERE stage = 'validate'")} \
        == {"success"}

    strict = _settings(tmp_path, source, max_quarantine_share=0.0, min_rows_for_share_check=1)
    nightly.extract(D2, run_id="run-strict", settings=strict)
    with pytest.raises(DataQualityError) as error:
        nightly.validate(D2, run_id="run-strict", settings=strict)
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
    lake_results = lake.read_partition(strict.lake_dir, nightly.VALIDATED, nightly.RESULTS, D2)
    assert set(lake_results.column("run_id").to_pylist()) == {"run-ok"}


def test_nightly_validate_detects_rows_lost_between_stage_and_lake(tmp_path, monkeypatch):
    settings = _settings(tmp_path, _source(tmp_path / "src"))
    nightly.extract(D2, run_id="run-1", settings=settings)
    real = pipeline.validate.validate_batch

    def loses_a_lab(*args, **kwargs):
        outcome = real(*args, **kwargs)
        # the stage's own books still balance; only the rows handed back are short
        outcome.passed["labs"] = outcome.passed["labs"].slice(1)
        return outcome

    monkeypatch.setattr(pipeline.validate, "validate_batch", loses_a_lab)
    with pytest.raises(DataQualityError, match=r"rows lost in validation: labs: extracted 3 != passed 2 "
                                                     r"\+ quarantined 0"):
        nightly.validate(D2, run_id="run-1", settings=settings)
    runs = _query(settings, "SELECT table_name, status, detail FROM ehr.pipeline_runs WHERE stage = 'validate'")
    assert [(r["table_name"], r["status"]) for r in runs] == [("all", "failed")]
    assert "rows lost in validation" in runs[0]["detail"]
    assert not lake.list_parts(settings.lake_dir, nightly.VALIDATED, "labs", D2)


@pytest.mark.slow
def test_nightly_report_checks_conservation_against_the_warehouse(tmp_path):
    settings = _settings(tmp_path, _source(tmp_path / "src"))
    summary = nightly.run_day(D2, run_id="run-1", settings=settings, ner_enabled=False, risk_enabled=False)
    assert summary["data_docs"] == str(settings.data_docs_dir / "index.html")
    assert summary["warehouse_rows"]["admissions"] == 2

    shutil.rmtree(settings.data_docs_dir)  # a report never names docs that are not there
    assert nightly.report(D2, run_id="run-1", settings=settings)["data_docs"] is None

    with open_warehouse(settings.warehouse) as wh:
        wh.execute_script("DELETE FROM ehr.admissions WHERE hadm_id = 200")
    with pytest.raises(DataQualityError, match=r"admissions: 1 rows in ehr.admissions != rows passed 2"):
        nightly.report(D2, run_id="run-1", settings=settings)

    nightly.load(D2, run_id="run-1", settings=settings)
    nightly.report(D2, run_id="run-1", settings=settings)
    with open_warehouse(settings.warehouse) as wh:
        wh.execute_script("UPDATE ehr.pipeline_runs SET rows_quarantined = 1 "
                          "WHERE stage = 'validate' AND table_name = 'labs'")
    with pytest.raises(DataQualityError) as error:
        nightly.report(D2, run_id="run-1", settings=settings)
    assert "labs: rows_in 3 != rows_out 3 + rows_quarantined 1" in str(error.value)
    assert "labs: 0 rows in ehr.quarantine != rows quarantined 1" in str(error.value)


def test_nightly_empty_day_after_nightly_history_succeeds_with_zero_rows(tmp_path):
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

    summary = nightly.run_day(EMPTY_DAY, run_id="run-empty", settings=settings, ner_enabled=False,
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
    monkeypatch.setenv("EHR_WORKDIR", str(tmp_path / "w"))  # the tasks' day lock lives beside its warehouse
    spec = importlib.util.spec_from_file_location("ehr_nightly_under_test", DAGS_DIR / "ehr_nightly.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "_ds", lambda: D2)
    monkeypatch.setattr(module, "_run_id", lambda: "manual__test")
    return module


@pytest.mark.parametrize("task_id", ["validate", "report"])
def test_nightly_dag_fails_bad_data_without_retry(monkeypatch, tmp_path, task_id):
    from airflow.sdk.exceptions import AirflowFailException

    module = _load_dag_module(monkeypatch, tmp_path)
    callable_ = module.dag.get_task(task_id).python_callable

    def bad_data(*_args, **_kwargs):
        raise DataQualityError("E103 table=notes ...")

    monkeypatch.setattr(nightly, task_id, bad_data)
    with pytest.raises(AirflowFailException, match="E103 table=notes"):
        callable_()

    def transient(*_args, **_kwargs):
        raise PipelineError("warehouse unreachable")

    monkeypatch.setattr(nightly, task_id, transient)
    with pytest.raises(PipelineError, match="unreachable"):  # left to Airflow's retries
        callable_()


# --- settings reach the stages -------------------------------------------------------------------
def test_nightly_extract_passes_the_source_settings_to_the_reader(sql_source):
    settings, seen = sql_source
    with pytest.raises(SourceOpened):
        nightly.extract(date(2026, 1, 1), run_id="t", settings=settings)
    assert seen == SQL_SOURCE


# --- the map-over-part helper --------------------------------------------------------------------
# A stand-in stage: one entity per note of the part, the "model" is a folder holding a file named ready.
ECHO = nightly.PartStage(
    name="echo", reads="notes", writes="note_entities", counts=("notes", "entities"), model="echo",
    model_ready=lambda model_dir: (model_dir / "ready").is_file(), model_fix="run `make echo-model`",
    switch="EHR_ECHO_ENABLED",
)


def _one_entity_per_note(notes: pa.Table, run_id: str) -> pa.Table:
    return pa.Table.from_pylist([
        {"note_id": n["note_id"], "subject_id": n["subject_id"], "hadm_id": n["hadm_id"], "ds": n["ds"],
         "label": "PROBLEM", "text": "chest pain", "start_char": 7, "end_char": 17, "section": None,
         "score": 0.9, "is_negated": True, "is_uncertain": False, "is_historical": False, "is_family": False,
         "is_hypothetical": False, "model_name": "echo", "model_version": "1", "run_id": run_id}
        for n in notes.to_pylist()
    ], schema=arrow_schema("note_entities"))


@pytest.fixture
def two_parts(tmp_path):
    """A workdir whose validated notes of D2 are two parts (subject 1's two notes, then subjects 2 and 3),
    and a ready model."""
    settings = load_settings(workdir=tmp_path / "w")
    lake.write_partition(settings.lake_dir, nightly.VALIDATED, "notes", D2, make_notes(["denies chest pain."] * 4, D2, subject_ids=[1, 1, 2, 3]), part_rows=2)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "ready").touch()
    return settings, model_dir


def _never_called(_part: Path) -> nightly.PartOutput:
    raise AssertionError("the transform ran although a check should have stopped the task first")


def _runs(settings) -> list[dict]:
    return _query(settings, "SELECT stage, table_name, status, rows_in, rows_out, detail FROM ehr.pipeline_runs "
                            "ORDER BY stage")


@pytest.mark.parametrize("streamed", [False, True], ids=["table", "record-batches"])
def test_nightly_map_part_writes_the_enriched_part_and_records_the_run(two_parts, streamed):
    settings, model_dir = two_parts
    read = []

    def echo(part: Path) -> nightly.PartOutput:
        notes = pq.read_table(part, schema=arrow_schema("notes"))
        read.append(part.name)
        # a column order other than the contract's: the helper writes the contract
        entities = _one_entity_per_note(notes, "run-1").select(["run_id", *arrow_schema("note_entities").names[:-1]])
        rows = iter(entities.to_batches(max_chunksize=1)) if streamed else entities
        return nightly.PartOutput(rows, lambda: (notes.num_rows, {"notes_seen": notes.num_rows}))

    assert nightly.map_part(ECHO, D2, 0, run_id="run-1", settings=settings, model_dir=model_dir,
                            transform=echo) == {"notes": 2, "entities": 2}
    assert read == ["part-0.parquet"]
    written = lake.read_partition(settings.lake_dir, nightly.ENRICHED, "note_entities", D2)
    assert written.schema.equals(arrow_schema("note_entities"))
    assert sorted(written.column("note_id").to_pylist()) == ["n0", "n1"]
    assert [p.name for p in lake.list_parts(settings.lake_dir, nightly.ENRICHED, "note_entities", D2)] == [
        "part-0.parquet"]
    assert _runs(settings) == [{"stage": "echo[part-0]", "table_name": "note_entities", "status": "success",
                                "rows_in": 2, "rows_out": 2, "detail": '{"notes_seen": 2}'}]


@pytest.mark.parametrize("part", [2, -1])
def test_nightly_map_part_out_of_range_names_the_rerun(two_parts, part):
    settings, model_dir = two_parts
    with pytest.raises(PipelineError, match=rf"echo: no notes part {part} for 2026-01-02 \(have 2\); "
                                            r"rerun validate first"):
        nightly.map_part(ECHO, D2, part, run_id="run-1", settings=settings, model_dir=model_dir,
                         transform=_never_called)
    assert not lake.list_parts(settings.lake_dir, nightly.ENRICHED, "note_entities", D2)


def test_nightly_map_part_without_a_model_fails_before_any_work(two_parts, tmp_path):
    settings, _ = two_parts
    missing = tmp_path / "no-model"
    with pytest.raises(PipelineError, match=rf"echo: no echo model at {missing}; run `make echo-model`"):
        nightly.map_part(ECHO, D2, 1, run_id="run-1", settings=settings, model_dir=missing,
                         transform=_never_called)
    assert not lake.list_parts(settings.lake_dir, nightly.ENRICHED, "note_entities", D2)
    assert _runs(settings) == []  # nothing was started, so nothing is recorded


@pytest.mark.parametrize("streamed", [False, True], ids=["table", "record-batches"])
def test_nightly_map_part_failure_is_recorded_and_leaves_no_part(two_parts, streamed):
    settings, model_dir = two_parts

    def fails(part: Path) -> nightly.PartOutput:
        notes = pq.read_table(part, schema=arrow_schema("notes"))
        if not streamed:
            raise RuntimeError("model crashed on part")

        def batches():  # the first batch is made, then the stage dies mid-part
            yield from _one_entity_per_note(notes, "run-1").to_batches(max_chunksize=1)[:1]
            raise RuntimeError("model crashed on part")

        return nightly.PartOutput(batches(), lambda: (notes.num_rows, {}))

    with pytest.raises(RuntimeError, match="model crashed"):
        nightly.map_part(ECHO, D2, 1, run_id="run-1", settings=settings, model_dir=model_dir, transform=fails)
    assert not lake.list_parts(settings.lake_dir, nightly.ENRICHED, "note_entities", D2)
    runs = _runs(settings)
    assert [(r["stage"], r["table_name"], r["status"]) for r in runs] == [("echo[part-1]", "note_entities", "failed")]
    # a library's message may quote the data it choked on: only the error type is recorded
    assert json.loads(runs[0]["detail"]) == {
        "error": "RuntimeError (message withheld: it may quote source data; see the task log)"}


@pytest.mark.parametrize(("task", "switch", "zeros"), [
    ("ner", "ner_enabled", {"notes": 0, "entities": 0}),
    ("risk", "risk_enabled", {"admissions": 0, "scored": 0}),
])
def test_nightly_part_tasks_switched_off_do_nothing(tmp_path, task, switch, zeros):
    # no validated parts and no model: a switched-off stage checks neither
    settings = load_settings(workdir=tmp_path / "w", **{switch: False})
    assert getattr(nightly, task)(D2, 0, run_id="run-1", settings=settings) == zeros
    assert not (settings.lake_dir / nightly.ENRICHED).exists()
