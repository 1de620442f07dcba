"""Shared test setup: every test runs with its own workdir and no pipeline.yaml from the caller.

Session fixtures used by more than one test package live here, so that a full run builds them once.
"""

from __future__ import annotations

import os
from typing import Any

import pytest


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
