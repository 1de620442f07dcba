"""The DAG on this machine (pipeline/airflow_local.py): the Airflow environment, the metadata set up once,
a failed day reported with its date, and the demo source generated once per set of parameters.

The Airflow CLI itself is replaced by recorders or a stand-in script; tests/e2e runs the real one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from pipeline import airflow_local
from pipeline.config import DAGS_DIR, load_settings

DAY = date(2026, 1, 2)


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(workdir=tmp_path / "w")


@pytest.fixture
def airflow_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Replaces the Airflow CLI: records the arguments of each call, which succeeds."""
    calls: list[tuple[str, ...]] = []

    def fake(env: dict[str, str], *args: str, check: bool = True, timeout: int = 900):
        calls.append(args)
        return subprocess.CompletedProcess(["airflow", *args], 0, "", "")

    monkeypatch.setattr(airflow_local, "_airflow", fake)
    return calls


def test_airflow_local_env_points_airflow_and_the_tasks_at_the_workdir(settings) -> None:
    env = airflow_local.airflow_env(settings)
    home = settings.airflow_home
    assert home.is_dir()
    assert env["AIRFLOW_HOME"] == str(home) and env["AIRFLOW__CORE__DAGS_FOLDER"] == str(DAGS_DIR)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow.db'}"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    # the task processes load the same settings as the caller
    assert env["EHR_WORKDIR"] == str(settings.workdir_abs)
    assert env["EHR_SOURCE_PATH"] == str(settings.source_dir)
    assert env["EHR_WAREHOUSE_URL"] == settings.warehouse
    assert env["EHR_NER_MODEL_PATH"] == str(settings.ner_model_dir)
    assert env["EHR_RISK_MODEL_PATH"] == str(settings.risk_model_dir)


def test_airflow_local_prepare_migrates_once_and_sets_the_pools(settings, airflow_calls) -> None:
    airflow_local.prepare_airflow(settings)
    pools = settings.airflow_home / "pools.json"
    assert airflow_calls == [("db", "migrate"), ("pools", "import", str(pools))]
    assert json.loads(pools.read_text()) == {
        settings.gpu_pool: {"slots": settings.gpu_pool_slots, "description": "NER and risk tasks"},
        "backfill": {"slots": 2, "description": "history backfill chunks"},  # ehr_history's chunk tasks
    }
    (settings.airflow_home / "airflow.db").touch()  # what the migration leaves behind
    airflow_calls.clear()
    airflow_local.prepare_airflow(settings)
    assert airflow_calls == [("pools", "import", str(pools))]


@pytest.mark.parametrize(("returncode", "output"), [
    (1, "Traceback ...\nImportError: no module named torch"),
    (0, "[2026-01-02] {taskinstance} INFO - Marking task as FAILED. dag_id=ehr_nightly, task_id=load\n"
        "DagRun Finished: dag_id=ehr_nightly, state=failed"),
])
def test_airflow_local_run_dag_day_reports_a_failed_day_with_its_date(
    monkeypatch: pytest.MonkeyPatch, returncode: int, output: str
) -> None:
    def fake(env, *args, check=True, timeout=900):
        assert args == ("dags", "test", "ehr_nightly", "2026-01-02") and not check
        return subprocess.CompletedProcess(["airflow", *args], returncode, output, "")

    monkeypatch.setattr(airflow_local, "_airflow", fake)
    with pytest.raises(RuntimeError, match=r"ehr_nightly failed for 2026-01-02:\n") as error:
        airflow_local.run_dag_day({}, DAY)
    assert output.splitlines()[-1] in str(error.value)


def test_airflow_local_run_dag_day_passes_a_successful_day(monkeypatch: pytest.MonkeyPatch) -> None:
    ok = "DagRun Finished: dag_id=ehr_nightly, state=success"
    monkeypatch.setattr(airflow_local, "_airflow", lambda env, *args, **kw: subprocess.CompletedProcess(args, 0, ok, ""))
    airflow_local.run_dag_day({}, DAY)


def test_airflow_local_airflow_failure_names_the_command_and_its_exit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a stand-in `airflow` next to the interpreter, where the real one is looked up
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "airflow"
    script.write_text("#!/bin/sh\necho \"args: $*\"\necho 'database is locked' >&2\nexit 3\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    with pytest.raises(RuntimeError, match=r"`airflow db migrate` failed \(exit 3\)") as error:
        airflow_local._airflow({"PATH": "/usr/bin:/bin"}, "db", "migrate")
    assert "args: db migrate" in str(error.value) and "database is locked" in str(error.value)
    assert airflow_local._airflow({"PATH": "/usr/bin:/bin"}, "db", "migrate", check=False).returncode == 3


def test_airflow_local_ensure_source_generates_once_per_parameter_set(settings) -> None:
    progress: list[tuple[int, int]] = []
    params = {"patients": 3, "days": 1, "history_days": 0, "seed": 1, "layout": "mimic4"}

    assert airflow_local.ensure_source(settings, **params, progress=lambda done, total: progress.append((done, total)))
    assert progress and progress[-1] == (3, 3)
    marker = settings.source_dir / "_generated.json"
    assert json.loads(marker.read_text()) == {**params, "start": airflow_local.DEMO_START.isoformat()}
    admissions = settings.source_dir / "hosp" / "admissions.csv.gz"
    written = admissions.stat().st_mtime_ns

    progress.clear()
    assert not airflow_local.ensure_source(settings, **params, progress=lambda d, t: progress.append((d, t)))
    assert progress == [] and admissions.stat().st_mtime_ns == written  # reused as it is

    assert airflow_local.ensure_source(settings, **{**params, "seed": 2})  # other parameters: generated again
    assert json.loads(marker.read_text())["seed"] == 2
