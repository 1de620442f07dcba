"""`ehr-pipeline train-ner` / `eval-ner`: the CLI builds the notes (pipeline.synth) and hands them to the trainer."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.synth.notes import held_out_notes, training_notes


def _texts(notes) -> list[str]:
    return [note.text for note in notes]


def test_cli_ner_train_uses_the_train_split_and_held_out_notes(monkeypatch, tmp_path):
    calls: dict = {}

    def fake_train(out_dir, notes, *, eval_notes=None, corpus="", **kwargs):
        calls.update(out_dir=out_dir, notes=notes, eval_notes=eval_notes, corpus=corpus, **kwargs)
        return {"name": "fake"}

    monkeypatch.setattr("pipeline.nlp.train.train_ner", fake_train)
    result = CliRunner().invoke(app, ["train-ner", "--workdir", str(tmp_path), "--notes", "3", "--eval-notes", "2",
                                      "--seed", "5", "--steps", "7", "--clinic-notes", "0"])
    assert result.exit_code == 0, result.output
    assert calls["out_dir"] == (tmp_path / "models" / "ner").resolve()
    assert _texts(calls["notes"]) == _texts(training_notes(3, seed=5))
    assert _texts(calls["eval_notes"]) == _texts(held_out_notes(2, seed=6))
    assert calls["corpus"] == "pipeline.synth.notes.training_notes(3, seed=5)"
    assert (calls["seed"], calls["steps"]) == (5, 7)

    CliRunner().invoke(app, ["train-ner", "--workdir", str(tmp_path), "--notes", "1", "--eval-notes", "0"])
    assert calls["eval_notes"] is None
    # the default schedule is a fixed number of steps, never a time limit
    from pipeline.nlp.train import DEFAULT_STEPS

    assert calls["steps"] == DEFAULT_STEPS and "max_seconds" not in calls


def test_cli_ner_eval_scores_the_held_out_notes(monkeypatch, tmp_path):
    seen: dict = {}

    def fake_evaluate(model_dir, notes, **kwargs):
        seen.update(model_dir=model_dir, notes=notes)
        return {"exact_f1": 0.5, "overlap_f1": 0.75, "assertion_accuracy": 1.0, "per_label": {}}

    monkeypatch.setattr("pipeline.nlp.train.evaluate_ner", fake_evaluate)
    result = CliRunner().invoke(app, ["eval-ner", "--workdir", str(tmp_path), "--notes", "4", "--json",
                                      "--model", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["overlap_f1"] == 0.75
    assert seen["model_dir"] == tmp_path / "m" and _texts(seen["notes"]) == _texts(held_out_notes(4))


def test_cli_ner_eval_table_shows_the_scores_per_label(monkeypatch, tmp_path):
    from pipeline.nlp.train import score_predictions
    from tests.nlp.corpus import tiny_corpus

    gold = tiny_corpus()[:1]
    found = {"starts": [e.start_char for e in gold[0].entities], "ends": [e.end_char for e in gold[0].entities],
             "labels": [e.label for e in gold[0].entities], "flags": [[False] * 5 for _ in gold[0].entities]}
    monkeypatch.setattr("pipeline.nlp.train.evaluate_ner", lambda *a, **k: score_predictions(gold, [found]))
    result = CliRunner().invoke(app, ["eval-ner", "--workdir", str(tmp_path), "--notes", "1"])
    assert result.exit_code == 0, result.output
    assert "nan" not in result.output and "1.000" in result.output


def test_cli_ner_eval_real_reads_an_anafora_folder(monkeypatch, tmp_path):
    from pipeline.config import REPO_ROOT

    monkeypatch.setenv("COLUMNS", "400")  # Rich's error box must not wrap the message
    seen: dict = {}

    def fake_eval(model_dir, notes, **kwargs):
        seen.update(notes=list(notes), **kwargs)
        per_label = {lb: {"exact": {"precision": 1.0, "recall": 1.0, "f1": 1.0},
                          "overlap": {"precision": 1.0, "recall": 1.0, "f1": 1.0}} for lb in ("PROBLEM",)}
        return {"per_label": per_label, "exact_f1": 1.0, "overlap_f1": 1.0, "assertion_accuracy": 1.0,
                "assertion_per_label": {"PROBLEM": {"is_negated": 0.5}}, "assertion_per_flag": {"is_negated": 0.5}}

    monkeypatch.setattr("pipeline.nlp.train.evaluate_ner", fake_eval)
    real = REPO_ROOT / "tests" / "fixtures" / "ctakes-dev"
    result = CliRunner().invoke(app, ["eval-ner", "--workdir", str(tmp_path), "--real", str(real)])
    assert result.exit_code == 0, result.output
    assert len(seen["notes"]) == 5 and seen["rules"] is True
    assert "5 annotated real notes" in result.output and "0.500" in result.output

    bad = CliRunner().invoke(app, ["eval-ner", "--workdir", str(tmp_path), "--real", str(tmp_path)])
    assert bad.exit_code != 0 and "no annotated notes" in bad.output
