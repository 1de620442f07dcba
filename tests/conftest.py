"""Shared test setup: every test runs with its own workdir and no pipeline.yaml from the caller."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for key in list(os.environ):
        if key.startswith("EHR_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("EHR_CONFIG", str(tmp_path_factory.getbasetemp() / "no-pipeline.yaml"))
