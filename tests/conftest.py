"""Shared test setup: every test runs with its own workdir and no pipeline.yaml from the caller; Airflow, when a
test loads it in this process, keeps its home in a scratch folder; and no test may leave the environment changed.

Session fixtures used by more than one test package live here, so that a full run builds them once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import services


@pytest.fixture(scope="session", autouse=True)
def _scratch_airflow_home_and_no_leaked_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Airflow reads AIRFLOW_HOME once, when first imported (tests import it lazily, after this runs): a scratch
    home instead of ~/airflow. At the end of the session the environment must be what it was at the start:
    a test sets variables with ``monkeypatch.setenv``, which undoes them."""
    before = dict(os.environ)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
        mp.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        yield
    # a variable that was there and changed, or one of ours that appeared (libraries add their own at import:
    # torch's KMP_*, TORCHINDUCTOR_*)
    changed = sorted(k for k in set(before) | set(os.environ)
                     if before.get(k) != os.environ.get(k) and k != "PYTEST_CURRENT_TEST"
                     and (k in before or k.startswith(("EHR_", "AIRFLOW"))))
    assert not changed, f"tests left environment variables changed: {changed}; set them with monkeypatch.setenv"


# the files that take a minute or more (measured on a 2-core machine, longest first)
LONGEST_FILES = (
    "tests/e2e/test_nightly_dag.py", "tests/faults/test_order_faults.py", "tests/deploy/test_celery.py",
    "tests/tasks/test_backfill.py", "tests/e2e/test_mimic_demo.py", "tests/report/test_browser.py",
    "tests/warehouse/test_run_day_backends.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first, then the other slow tests, then the rest (stable: files keep their order
    otherwise). ``make test`` runs the suite on two workers, a file at a time each (``-n 2 --dist loadfile``):
    with the minute-long files handed out first, the quick ones fill in behind them instead of one worker
    finishing a long file alone at the end. Tests do not depend on their order (each has its own workdir and
    databases)."""
    def rank(item: pytest.Item) -> tuple[int, int]:
        path = item.nodeid.split("::", 1)[0]
        if path in LONGEST_FILES:
            return 0, LONGEST_FILES.index(path)
        return (1 if item.get_closest_marker("slow") else 2), 0

    items.sort(key=rank)


def pytest_runtest_setup(item: pytest.Item) -> None:
    services.current_test = item  # before the item's fixtures: a session fixture set up for it sees it too


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for key in list(os.environ):
        if key.startswith("EHR_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("EHR_CONFIG", str(tmp_path_factory.getbasetemp() / "no-pipeline.yaml"))
    # the NER task keeps its model loaded per process (pipeline.tasks.nightly._ner_annotators): each test starts
    # without one, so a test counting model loads does not depend on which test ran before it in the worker
    from pipeline.tasks import nightly

    monkeypatch.setattr(nightly, "_NER_LOADED", {})


@pytest.fixture(scope="session")
def history() -> dict:
    """The synthetic admission history of tests/risk/conftest.py (a planted readmission signal)."""
    from tests.risk.conftest import make_history

    return make_history()


@pytest.fixture(scope="session")
def trained(history: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Any, object]:
    """A risk model trained on ``history``: (metrics, the loaded RiskModel, its folder)."""
    from pipeline.risk.model import RiskModel
    from pipeline.risk.train import train_risk_model

    out_dir = tmp_path_factory.mktemp("risk_model")
    metrics = train_risk_model(**history, out_dir=out_dir)
    return metrics, RiskModel.load(out_dir, "cpu"), out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight NER model of tests/nlp/conftest.py (loading and plumbing; the NER, task and
    benchmark tests share it)."""
    from tests.nlp.conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_ner"))


@pytest.fixture(scope="session")
def report_run(tmp_path_factory: pytest.TempPathFactory, trained: tuple, tiny_model_dir: Path) -> dict[str, Any]:
    """A demo-like run for the report tests: 1,500 generated patients, 30 days of history bulk-loaded, then three
    nightly days through every stage (risk with the ``trained`` model, NER with the tiny one) into DuckDB. On the
    third day the admission mix is shifted (emergencies 40 % instead of ~87 %: ``generate(shift_day=...)``).

    Returns the settings, the nightly days and the shifted day. Tests may read it; the report tests that
    change the warehouse put it back.
    """
    from datetime import timedelta

    from pipeline.airflow_local import DEMO_START
    from pipeline.config import load_settings
    from pipeline.synth import generate
    from pipeline.tasks import history, nightly

    days = [DEMO_START + timedelta(days=i) for i in range(3)]
    with pytest.MonkeyPatch.context() as mp:  # built before any test's own isolation: none of the caller's EHR_*
        for key in [k for k in os.environ if k.startswith("EHR_")]:
            mp.delenv(key)
        mp.setenv("EHR_CONFIG", str(tmp_path_factory.getbasetemp() / "no-pipeline.yaml"))
        settings = load_settings(workdir=tmp_path_factory.mktemp("report_run"), ner_model_path=tiny_model_dir,
                                 risk_model_path=trained[2])
        generate(settings.source_dir, patients=1500, start=DEMO_START, days=len(days), history_days=30, seed=7,
                 shift_day=days[-1], shift_emergency_share=0.4)
        history.ingest_history(DEMO_START - timedelta(days=30), DEMO_START - timedelta(days=1), settings=settings)
        for day in days:
            nightly.run_day(day, settings=settings)
    return {"settings": settings, "days": days, "shifted": days[-1]}
