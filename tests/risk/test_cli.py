"""The risk parts of the command line: `demo` trains the risk model only when absent; `eval-risk` output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline import airflow_local, cli
from pipeline.config import load_settings
from pipeline.risk.model import RiskModel
from pipeline.tasks import history


@pytest.fixture
def demo_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`demo` with everything but the model bootstrap decision replaced by recorders."""
    calls: list[str] = []
    monkeypatch.setattr(airflow_local, "ensure_source", lambda *a, **k: False)
    monkeypatch.setattr(history, "ingest_history", lambda *a, **k: {})
    monkeypatch.setattr(cli, "train_ner", lambda **k: calls.append("train_ner"))
    monkeypatch.setattr(cli, "train_risk", lambda **k: calls.append("train_risk"))
    monkeypatch.setattr(cli, "train_phi", lambda **k: calls.append("train_phi"))
    monkeypatch.setattr(airflow_local, "prepare_airflow", lambda settings: {})
    monkeypatch.setattr(airflow_local, "run_dag_day", lambda env, day: calls.append(f"dag {day}"))
    monkeypatch.setattr(cli, "_counts_table", lambda *a, **k: "")
    return calls


def _demo(workdir: Path) -> str:
    result = CliRunner().invoke(cli.app, ["demo", "--workdir", str(workdir), "--days", "1"])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_demo_reuses_a_saved_risk_model(tmp_path: Path, demo_calls: list[str]) -> None:
    settings = load_settings(workdir=tmp_path)
    (settings.ner_model_dir).mkdir(parents=True)
    (settings.ner_model_dir / "config.json").write_text("{}")
    names = ("a", "b")
    RiskModel(torch.zeros(2, 2), torch.zeros(2), names, np.zeros(2), np.ones(2), np.zeros(2)).save(
        settings.risk_model_dir
    )
    output = _demo(tmp_path)
    assert "train_risk" not in demo_calls and "train_ner" not in demo_calls
    assert "risk model: reusing" in output
    assert any(c.startswith("dag ") for c in demo_calls)


def test_cli_demo_trains_the_risk_model_when_absent_or_incomplete(
    tmp_path: Path, demo_calls: list[str]
) -> None:
    settings = load_settings(workdir=tmp_path)
    (settings.ner_model_dir).mkdir(parents=True)
    (settings.ner_model_dir / "config.json").write_text("{}")
    _demo(tmp_path)
    assert demo_calls.count("train_risk") == 1
    settings.risk_model_dir.mkdir(parents=True)
    (settings.risk_model_dir / "model.json").write_text("{}")  # metadata without weights: not a model
    _demo(tmp_path)
    assert demo_calls.count("train_risk") == 2


def test_cli_eval_risk_prints_the_interval_against_lace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = {
        "readmit_30d": {"auroc": 0.81, "auprc": 0.4, "brier": 0.1},
        "lace_readmit_30d": {"auroc": 0.7, "auprc": 0.3, "brier": None},
        "readmit_30d_vs_lace": {
            "auroc_difference": 0.11,
            "ci95": [0.04, 0.18],
            "replicates": 2000,
            "seed": 1,
            "method": "paired bootstrap, stratified by outcome",
        },
    }
    monkeypatch.setattr(history, "evaluate_risk_model", lambda settings, model_dir: result)
    table = CliRunner().invoke(cli.app, ["eval-risk", "--workdir", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert "model - LACE: +0.110 (95% CI +0.040 to +0.180" in table.output
    as_json = CliRunner().invoke(cli.app, ["eval-risk", "--workdir", str(tmp_path), "--json"])
    assert json.loads(as_json.output)["readmit_30d_vs_lace"]["ci95"] == [0.04, 0.18]
