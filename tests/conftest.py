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


def pytest_runtest_setup(item: pytest.Item) -> None:
    services.current_test = item  # before the item's fixtures: a session fixture set up for it sees it too


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for key in list(os.environ):
        if key.startswith("EHR_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("EHR_CONFIG", str(tmp_path_factory.getbasetemp() / "no-pipeline.yaml"))


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
