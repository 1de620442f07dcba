"""The PHI gate's task side: the tagger is loaded before validation (fail closed), exports are scanned without text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_settings
from pipeline.nlp.labels import bio_labels
from pipeline.nlp.phi import PHI_ENTITY_TYPES, PhiTaggerError
from pipeline.tasks.phi import scan_export, validation_config
from tests.nlp.conftest import build_tiny_model

SSN = "531-62-4489"
NOTES_CSV = (
    "note_id,subject_id,text\n"
    f'a-1,1,"Name: ___ Chief complaint: dyspnea.\nPatient denies chest pain. SSN {SSN}."\n'
    'a-2,1,"Seen by Dr. [** Doctor Last Name **] on [**2151-3-4**]. BP 120/80."\n'
)


@pytest.fixture(scope="module")
def tiny_phi_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_phi"), labels=bio_labels(PHI_ENTITY_TYPES), seed=3)


def test_validation_config_without_model_runs_rules_only(tmp_path, caplog):
    settings = load_settings(workdir=tmp_path)
    assert validation_config(settings).phi_tagger is None
    assert "runs its rules only" in caplog.text


def test_validation_config_loads_the_tagger_with_the_threshold(tmp_path, tiny_phi_dir, monkeypatch):
    monkeypatch.setenv("EHR_PHI_MODEL_PATH", str(tiny_phi_dir))
    monkeypatch.setenv("EHR_PHI_THRESHOLD", "0.9")
    config = validation_config(load_settings(workdir=tmp_path))
    assert config.phi_tagger is not None and config.phi_tagger.threshold == 0.9 and config.phi_threshold == 0.9
    monkeypatch.setenv("EHR_PHI_GATE", "false")
    assert validation_config(load_settings(workdir=tmp_path)).phi_tagger is None


def test_validation_config_fails_closed_on_a_configured_missing_model(tmp_path, monkeypatch):
    monkeypatch.setenv("EHR_PHI_MODEL_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(PhiTaggerError, match="cannot be loaded"):
        validation_config(load_settings(workdir=tmp_path))


def test_scan_export_names_types_and_offsets_never_text(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "notes.csv").write_text(NOTES_CSV)
    (export / "labs.csv").write_text("itemid,value\n1,2\n")  # no text column: skipped
    scanned = scan_export(export, load_settings(workdir=tmp_path))
    assert [(s.note_id, [f["type"] for f in s.findings]) for s in scanned] == [("a-1", ["US_SSN"]), ("a-2", [])]
    finding = scanned[0].findings[0]
    text = NOTES_CSV.split('"')[1]
    assert text[finding["start"] : finding["end"]] == SSN and set(finding) == {"type", "start", "end", "score", "source"}


def test_cli_scan_phi(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text(NOTES_CSV)
    runner = CliRunner()
    result = runner.invoke(app, ["scan-phi", str(path), "--workdir", str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [r["note_id"] for r in rows] == ["a-1"] and rows[0]["findings"][0]["type"] == "US_SSN"
    assert SSN not in result.output and "dyspnea" not in result.output
    table = runner.invoke(app, ["scan-phi", str(path), "--workdir", str(tmp_path), "--all"])
    assert table.exit_code == 1 and "US_SSN" in table.output and SSN not in table.output
    missing = runner.invoke(app, ["scan-phi", str(tmp_path / "nope.csv"), "--workdir", str(tmp_path)])
    assert missing.exit_code == 2
    clean = tmp_path / "clean.csv"
    clean.write_text('note_id,text\nc-1,"Seen by Dr. ___ on [**2151-3-4**]."\n')
    assert runner.invoke(app, ["scan-phi", str(clean), "--workdir", str(tmp_path)]).exit_code == 0


def test_demo_uses_a_phi_model_that_is_there_and_trains_none(tmp_path, monkeypatch):
    """The demo never trains the tagger (one trained in its minutes held half the generated notes); a tagger in
    the workdir is used, and the nightly runs are pointed at it."""
    from pipeline import airflow_local, cli
    from pipeline.tasks import history

    calls: list[tuple] = []
    monkeypatch.setattr(airflow_local, "ensure_source", lambda *a, **k: False)
    monkeypatch.setattr(history, "ingest_history", lambda *a, **k: calls.append(("history",)))
    for name in ("train_ner", "train_risk"):
        monkeypatch.setattr(cli, name, lambda **k: None)
    monkeypatch.setattr(cli, "train_phi", lambda **k: calls.append(("train_phi",)))
    monkeypatch.setattr(airflow_local, "prepare_airflow", lambda settings: {})
    monkeypatch.setattr(airflow_local, "run_dag_day", lambda env, day: None)
    monkeypatch.setattr(cli, "_counts_table", lambda *a, **k: "")
    settings = load_settings(workdir=tmp_path)
    args = ["demo", "--workdir", str(tmp_path), "--days", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "PHI gate: rules only" in result.output and calls == [("history",)]
    calls.clear()
    settings.phi_model_dir.mkdir(parents=True)
    (settings.phi_model_dir / "config.json").write_text("{}")
    result = CliRunner().invoke(app, args)
    # compared without whitespace: a terminal narrower than the path may still wrap it
    assert f"PHIgate:tagger{settings.phi_model_dir}" in "".join(result.output.split()) and calls == [("history",)]
    env = airflow_local.airflow_env(settings)
    assert env["EHR_PHI_MODEL_PATH"] == str(settings.phi_model_dir)
