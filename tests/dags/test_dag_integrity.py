"""DAG integrity: every DAG file in dags/ parses into the DagBag without import errors, without loading the heavy
stage code (torch, transformers, spaCy, GX, DuckDB, psycopg, pyarrow, the pipeline's stages and tasks) and without
looking up an Airflow connection or variable; every DAG has tags and retries.

The DagBag is filled in a child process, so what the parse imports is measured on a clean ``sys.modules``: the
scheduler's DAG processor parses these files every few seconds, and anything heavy here slows every parse.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import DAGS_DIR, REPO_ROOT

DAG_FILES = sorted(DAGS_DIR.glob("*.py"))
# Third-party packages the stages need and a DAG file must not import at parse time.
HEAVY_PACKAGES = ("torch", "transformers", "spacy", "medspacy", "great_expectations", "duckdb", "psycopg", "pyarrow",
                  "pandas")
# The only modules of our package a DAG file may import at parse time: the settings (pydantic, YAML, environment).
PARSE_TIME_PIPELINE_MODULES = {"pipeline", "pipeline.config"}

_PARSE = r"""
import json, sys

looked_up = []


def refuse(kind):
    def lookup(*args, **kwargs):
        looked_up.append(kind)
        raise RuntimeError(f"{kind} looked up while parsing DAG files")
    return lookup


import airflow.sdk as sdk
import airflow.sdk.execution_time.context as context
from airflow.models.connection import Connection as StoredConnection
from airflow.models.variable import Variable as StoredVariable

# every way a DAG file could reach a connection or a variable: the Task SDK's accessors and the metadata models
for owner, name, kind in [
    (context, "_get_connection", "connection"), (context, "_get_variable", "variable"),
    (sdk.BaseHook, "get_connection", "connection"), (sdk.Connection, "get", "connection"),
    (sdk.Variable, "get", "variable"),
    (StoredConnection, "get_connection_from_secrets", "connection"), (StoredVariable, "get", "variable"),
]:
    setattr(owner, name, staticmethod(refuse(kind)) if isinstance(owner, type) else refuse(kind))

from airflow.dag_processing.dagbag import DagBag

before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    "import_errors": {str(path): str(error) for path, error in bag.import_errors.items()},
    "imported": sorted(set(sys.modules) - before),
    "looked_up": looked_up,
    "dags": {
        dag_id: {"fileloc": dag.fileloc, "tags": sorted(dag.tags), "doc_md": bool(dag.doc_md),
                 "retries": {task.task_id: task.retries for task in dag.tasks}}
        for dag_id, dag in bag.dags.items()
    },
}))
"""


def _rel(path: Path | str) -> str:
    return str(Path(path).resolve().relative_to(REPO_ROOT))


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The DagBag of dags/ as a child process sees it: a fresh Airflow home, a warehouse named by an Airflow
    connection (so reading the warehouse URL at parse time would look the connection up)."""
    import os

    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EHR_"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False", "EHR_WAREHOUSE_CONN_ID": "ehr_warehouse",
                "EHR_CONFIG": str(home / "no-pipeline.yaml"), "EHR_WORKDIR": str(home / "workdir")})
    proc = subprocess.run([sys.executable, "-c", _PARSE, str(DAGS_DIR)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dag_integrity_finds_the_dag_files(parsed: dict) -> None:
    assert DAG_FILES, "no DAG files in dags/"
    parsed_files = {_rel(dag["fileloc"]) for dag in parsed["dags"].values()}
    assert parsed_files == {_rel(path) for path in DAG_FILES}


@pytest.mark.parametrize("path", DAG_FILES, ids=[_rel(p) for p in DAG_FILES])
def test_dag_integrity_parses_without_errors(parsed: dict, path: Path) -> None:
    errors = {k: v for k, v in parsed["import_errors"].items() if Path(k).resolve() == path.resolve()}
    assert not errors, errors


@pytest.mark.parametrize("path", DAG_FILES, ids=[_rel(p) for p in DAG_FILES])
def test_dag_integrity_tags_retries_and_docs(parsed: dict, path: Path) -> None:
    dags = [dag for dag in parsed["dags"].values() if Path(dag["fileloc"]).resolve() == path.resolve()]
    assert dags, f"{_rel(path)} defines no DAG"
    for dag in dags:
        assert dag["tags"] and dag["doc_md"]
        assert dag["retries"] and all(retries >= 1 for retries in dag["retries"].values()), dag["retries"]


def test_dag_integrity_parse_imports_nothing_heavy(parsed: dict) -> None:
    imported = set(parsed["imported"])
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY_PACKAGES)
    assert not heavy, f"parsing the DAG files imported {heavy[:10]}: import them inside the task bodies"
    ours = {m for m in imported if m.split(".")[0] == "pipeline"}
    assert ours <= PARSE_TIME_PIPELINE_MODULES, sorted(ours - PARSE_TIME_PIPELINE_MODULES)
    assert "pipeline.config" in ours  # the measure sees our imports (the DAG reads its settings at parse time)


def test_dag_integrity_parse_looks_up_no_connection_or_variable(parsed: dict) -> None:
    assert parsed["looked_up"] == []


# --- the nightly DAG's shape (loaded in this process) -----------------------------------------------------------
def _load_dag(module_name: str, dag_id: str = "ehr_nightly"):
    import importlib.util

    spec = importlib.util.spec_from_file_location(module_name, DAGS_DIR / f"{dag_id}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return next(v for v in vars(module).values() if getattr(v, "dag_id", None) == dag_id)


def test_dag_integrity_ehr_nightly_shape() -> None:
    dag = _load_dag("ehr_nightly_shape")
    assert set(dag.tags) >= {"ehr", "nightly"}
    assert dag.doc_md
    assert dag.max_active_runs == 1
    ids = set(dag.task_ids)
    assert {"extract", "validate", "ner", "risk", "load", "report"} <= ids
    for t in dag.tasks:
        assert t.retries >= 1, t.task_id
        assert t.retry_exponential_backoff, t.task_id
    # order: extract → validate → ner → risk → load → report
    assert "validate" in dag.get_task("extract").downstream_task_ids
    assert "risk" in dag.get_task("ner").downstream_task_ids
    assert "load" in dag.get_task("risk").downstream_task_ids
    assert "report" in dag.get_task("load").downstream_task_ids
    # the per-partition stages go to the GPU queue and pool
    for task_id in ("ner", "risk"):
        assert dag.get_task(task_id).queue == "gpu"
        assert dag.get_task(task_id).pool == "gpu"
    # one mapped task instance per lake part file (dynamic task mapping), the rest plain tasks
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    mapped = {t.task_id for t in dag.tasks if isinstance(t, MappedOperator)}
    assert mapped == {"ner", "risk"}, mapped
    # mapped tasks tolerate an empty mapping (a day without notes still loads)
    assert dag.get_task("load").trigger_rule == "none_failed"


def test_dag_integrity_schedule_queue_and_retries_come_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_SCHEDULE", "0 3 * * *")
    monkeypatch.setenv("EHR_GPU_QUEUE", "cuda_workers")
    monkeypatch.setenv("EHR_RETRIES", "4")
    dag = _load_dag("ehr_nightly_configured")
    assert dag.schedule == "0 3 * * *"
    assert dag.get_task("ner").queue == "cuda_workers"
    assert dag.get_task("extract").retries == 4


def test_dag_integrity_ehr_history_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_BACKFILL_POOL", "seed")
    dag = _load_dag("ehr_history_shape", "ehr_history")
    assert dag.schedule is None and dag.max_active_runs == 1 and "history" in dag.tags
    assert {"start", "end", "chunk", "reprocess", "skip_ner", "skip_risk"} <= set(dag.params.keys())
    assert dag.params["chunk"] == "month" and dag.params["reprocess"] == "missing"
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    mapped = {t.task_id for t in dag.tasks if isinstance(t, MappedOperator)}
    assert mapped == {"extract", "validate", "ner", "risk_load"}, mapped
    # plan → extract → validate → ner → risk_load → check
    for up, down in (("plan", "extract"), ("extract", "validate"), ("validate", "ner"), ("ner", "risk_load"),
                     ("risk_load", "check")):
        assert down in dag.get_task(up).downstream_task_ids, (up, down)
    assert dag.get_task("extract").pool == "seed" and dag.get_task("validate").pool == "seed"
    for task_id in ("ner", "risk_load"):  # NER and risk keep their queue and pool
        assert (dag.get_task(task_id).queue, dag.get_task(task_id).pool) == ("gpu", "gpu")
    # validate and risk/load run in chunk order (each learns from the chunks before it)
    assert dag.get_task("validate").max_active_tis_per_dagrun == 1
    assert dag.get_task("risk_load").max_active_tis_per_dagrun == 1
    assert dag.get_task("check").trigger_rule == "all_done"
