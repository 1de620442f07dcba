"""Faults seen from a whole day's run (issue 13): a malformed row does not fail the day and leaks nowhere,
deterministic failures fail the Airflow task without retries, missing models are found before extraction."""

from __future__ import annotations

import json
import logging
import re
from datetime import date
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.sources import SourceError
from pipeline.tasks import nightly
from pipeline.tasks.runs import ConfigurationError, DataQualityError, PipelineError
from pipeline.warehouse import open_warehouse
from tests.sources.conftest import DISCHARGE, FILES, LABS, write_folder
from tests.tasks.test_nightly import _load_dag_module

D2 = date(2026, 1, 2)
SSN = "123-45-6789"
REAL_LOOKING_SSN = "531-62-4489"  # Presidio rightly ignores 123-45-6789 as a known dummy
PHONE = "(617) 555-0142"


def _settings(tmp_path: Path, source: Path, **overrides):
    return load_settings(workdir=tmp_path / "w", source_path=source, ner_enabled=False, risk_enabled=False,
                         **overrides)


def _everything_stored(settings) -> str:
    """Every text the warehouse holds about runs, quarantine and results (what analysts can read)."""
    with open_warehouse(settings.warehouse) as wh:
        parts = [json.dumps(wh.query(f"SELECT * FROM ehr.{t}").to_pylist(), default=str)
                 for t in ("pipeline_runs", "quarantine", "validation_results", "notes", "labs")]
    return "\n".join(parts)


def test_faults_malformed_note_row_is_quarantined_and_leaks_nowhere(tmp_path: Path, caplog) -> None:
    bad_row = f'9-DS-1,1,100,DS,1,2026-01-02 12:00:00,"Patient SSN {SSN}, phone {PHONE}"\n'
    source = write_folder(tmp_path / "src", {**FILES, "note/discharge.csv.gz": DISCHARGE + bad_row})
    settings = _settings(tmp_path, source)
    with caplog.at_level(logging.DEBUG):
        summary = nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)
    assert summary["warehouse_rows"]["notes"] == 2  # the day's good notes loaded
    with open_warehouse(settings.warehouse) as wh:
        q = wh.query("SELECT rule, detail, record_key FROM ehr.quarantine WHERE source_table = 'notes'").to_pylist()
    assert q == [{"rule": "malformed_row", "record_key": "record 5",
                  "detail": f"{source / 'note' / 'discharge.csv.gz'} line 7 (record 5): 7 fields, the header has 8"}]
    stored = _everything_stored(settings) + "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert SSN not in stored and PHONE not in stored


def test_faults_source_error_in_run_records_names_the_file_without_row_content(tmp_path: Path) -> None:
    cut = DISCHARGE + f'4-DS-1,3,300,DS,2,2026-01-03 11:00:00,,"SSN {SSN}\nand more'
    files = {rel.removesuffix(".gz"): c for rel, c in {**FILES, "note/discharge.csv.gz": cut}.items()}
    settings = _settings(tmp_path, write_folder(tmp_path / "src", files))
    with pytest.raises(SourceError, match=r"discharge\.csv line 7"):
        nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)
    with open_warehouse(settings.warehouse) as wh:
        runs = wh.query("SELECT stage, status, detail FROM ehr.pipeline_runs").to_pylist()
    assert [(r["stage"], r["status"]) for r in runs] == [("extract", "failed")]
    assert "line 7" in runs[0]["detail"] and SSN not in runs[0]["detail"]
    assert not (settings.lake_dir / "raw" / "notes").exists()  # nothing of the day written


def test_faults_duplicate_header_loads_nothing(tmp_path: Path) -> None:
    header, rest = LABS.split("\n", 1)
    files = {**FILES, "hosp/labevents.csv.gz": header.replace("storetime", "charttime") + "\n" + rest}
    settings = _settings(tmp_path, write_folder(tmp_path / "src", files))
    with pytest.raises(SourceError, match="names a column twice"):
        nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)
    with open_warehouse(settings.warehouse) as wh:
        assert wh.query("SELECT count(*) AS n FROM ehr.labs").column("n")[0].as_py() == 0


def test_faults_missing_ner_model_fails_before_extraction(tmp_path: Path) -> None:
    settings = load_settings(workdir=tmp_path / "w", source_path=write_folder(tmp_path / "src"),
                             ner_model_path=tmp_path / "nowhere", risk_enabled=False)
    with pytest.raises(ConfigurationError, match=r"nothing extracted: no NER model at .*nowhere") as err:
        nightly.run_day(D2, settings=settings, risk_enabled=False)
    assert "--skip-ner" in str(err.value)
    assert not (settings.lake_dir / "raw").exists()
    # switched off for this run, the same settings run
    nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)


def test_faults_missing_risk_model_and_bad_bands_are_named_together(tmp_path: Path) -> None:
    settings = load_settings(workdir=tmp_path / "w", source_path=write_folder(tmp_path / "src"),
                             ner_enabled=False, risk_band_medium=0.3, risk_band_high=0.3)
    with pytest.raises(ConfigurationError) as err:
        nightly.run_day(D2, settings=settings)
    assert "no risk model at" in str(err.value) and "risk bands:" in str(err.value)
    assert not (settings.lake_dir / "raw").exists()


@pytest.mark.parametrize("task_id", ["extract", "validate", "ner", "risk", "load", "report"])
@pytest.mark.parametrize("error", [
    SourceError("labevents.csv line 1: the header names a column twice"),
    ConfigurationError("no NER model at /models/ner"),
    DataQualityError("E103 table=notes"),
], ids=["source", "configuration", "data-quality"])
def test_faults_deterministic_failures_fail_the_airflow_task_without_retry(monkeypatch, tmp_path, task_id,
                                                                          error) -> None:
    module = _load_dag_module(monkeypatch, tmp_path)
    monkeypatch.setattr("pipeline.tasks.preflight.check_ready", lambda *a, **k: None)
    args = (0,) if task_id in ("ner", "risk") else ()
    _assert_fails_at_once_only_when_deterministic(monkeypatch, module.dag.get_task(task_id).python_callable, args,
                                                  nightly, task_id, error)


def _raising(error: BaseException):
    def raise_(*_args, **_kwargs):
        raise error

    return raise_


def _assert_fails_at_once_only_when_deterministic(monkeypatch, task_callable, args, owner, name: str,
                                                  error: BaseException) -> None:
    """With ``owner.name`` raising `error` (deterministic) the Airflow task fails without retry, its message kept;
    with a transient error instead, the error itself reaches Airflow, which retries the task."""
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setattr(owner, name, _raising(error))
    with pytest.raises(AirflowFailException, match=re.escape(str(error).split(":")[0])):
        task_callable(*args)
    monkeypatch.setattr(owner, name, _raising(PipelineError("warehouse unreachable")))
    with pytest.raises(PipelineError, match="unreachable"):  # left to Airflow's retries
        task_callable(*args)


def _load_history_dag(monkeypatch, tmp_path):
    import importlib.util

    from pipeline.config import DAGS_DIR

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("EHR_WORKDIR", str(tmp_path / "w"))
    spec = importlib.util.spec_from_file_location("ehr_history_under_test", DAGS_DIR / "ehr_history.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "_params", lambda: {"start": "2026-01-01", "end": "2026-01-31", "chunk": "month",
                                                     "reprocess": "missing", "skip_ner": True, "skip_risk": True})
    return module


@pytest.mark.parametrize(("task_id", "target"), [("plan", "plan_for_dag"), ("extract", "run_dag_group")])
def test_faults_history_dag_fails_deterministic_errors_without_retry(monkeypatch, tmp_path, task_id, target) -> None:
    """The ehr_history DAG shares the nightly DAG's rule (``pipeline.tasks.runs.fails_without_retry``)."""
    from pipeline.tasks import backfill

    module = _load_history_dag(monkeypatch, tmp_path)
    item = {"start": "2026-01-01", "end": "2026-01-31", "stages": ["extract"], "since": "2026-01-01"}
    args = (item,) if task_id == "extract" else ()
    _assert_fails_at_once_only_when_deterministic(monkeypatch, module.dag.get_task(task_id).python_callable, args,
                                                  backfill, target,
                                                  SourceError("labevents.csv line 3: 16 fields, the header has 15"))


def test_faults_dag_extract_checks_models_before_extracting(monkeypatch, tmp_path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    module = _load_dag_module(monkeypatch, tmp_path)
    monkeypatch.setenv("EHR_WORKDIR", str(tmp_path / "w"))
    monkeypatch.setenv("EHR_NER_MODEL_PATH", str(tmp_path / "nowhere"))
    # preflight opens the source before it looks at models: a readable source, so the model is what fails
    monkeypatch.setenv("EHR_SOURCE_PATH", str(write_folder(tmp_path / "src")))
    extracted = []
    monkeypatch.setattr(nightly, "extract", lambda *a, **k: extracted.append(1))
    with pytest.raises(AirflowFailException, match="no NER model"):
        module.dag.get_task("extract").python_callable()
    assert not extracted


# --- free text outside notes ---------------------------------------------------------------------
def test_faults_every_free_text_column_goes_through_the_phi_gate() -> None:
    from pipeline.config import SCHEMAS_DIR
    from pipeline.contracts import INPUT_TABLES, free_text_columns
    from pipeline.validate.suites import load_suite

    gated = [name for name in INPUT_TABLES if free_text_columns(name)]
    assert set(gated) >= {"notes", "labs"}
    for name in gated:
        suite = load_suite(SCHEMAS_DIR / "expectations", name)
        assert "_phi_entities" in suite.columns(), f"{name} has free text but no PHI gate rule"


def test_faults_ssn_in_lab_comments_is_quarantined_not_loaded(tmp_path: Path) -> None:
    labs = LABS.replace('"said ""ok"" \\ fine"', f'"call back re SSN {REAL_LOOKING_SSN}"')
    assert REAL_LOOKING_SSN in labs
    settings = _settings(tmp_path, write_folder(tmp_path / "src", {**FILES, "hosp/labevents.csv.gz": labs}))
    nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)
    with open_warehouse(settings.warehouse) as wh:
        q = wh.query("SELECT record_key, rule, detail, payload FROM ehr.quarantine WHERE source_table = 'labs'")
        q = q.to_pylist()
        assert [(r["record_key"], r["rule"]) for r in q] == [("3", "phi_suspected")]
        assert "US_SSN" in q[0]["detail"]
        assert wh.query("SELECT count(*) AS n FROM ehr.labs WHERE labevent_id = 3").column("n")[0].as_py() == 0
    assert REAL_LOOKING_SSN not in _everything_stored(settings)


@pytest.mark.slow
def test_faults_raw_free_text_partitions_are_removed_once_the_day_is_loaded(tmp_path: Path) -> None:
    from pipeline import lake

    source = write_folder(tmp_path / "src", {**FILES, "note/discharge.csv.gz": DISCHARGE.replace(
        "denies chest pain.", f"denies chest pain. SSN {REAL_LOOKING_SSN}.")})
    settings = _settings(tmp_path, source)
    nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)
    root = settings.lake_dir
    assert not lake.list_parts(root, "raw", "notes", D2) and not lake.list_parts(root, "raw", "labs", D2)
    assert lake.list_parts(root, "raw", "admissions", D2)  # tables without free text stay
    import pyarrow.parquet as pq

    lake_text = json.dumps([pq.read_table(p).to_pylist() for p in root.rglob("*.parquet")], default=str)
    assert "1-DS-1" in lake_text  # the quarantine row is there (parquet is compressed: read, not grepped)
    assert REAL_LOOKING_SSN not in lake_text  # the quarantined note's text is nowhere in the lake
    with open_warehouse(settings.warehouse) as wh:
        payload = wh.query("SELECT payload FROM ehr.quarantine WHERE record_key = '1-DS-1'").column("payload")
    assert '"sha256"' in payload[0].as_py()  # the quarantine keeps its hash

    kept = _settings(tmp_path / "keep", source, raw_retention="keep")
    nightly.run_day(D2, settings=kept, ner_enabled=False, risk_enabled=False)
    assert lake.list_parts(kept.lake_dir, "raw", "notes", D2)
