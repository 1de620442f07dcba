"""pipeline.nlp.annotate (built from the settings), `ehr-pipeline annotate`, and the int8 precision."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_settings
from pipeline.nlp import annotate
from pipeline.nlp.api import ANNOTATION_SCHEMA, annotations_table
from pipeline.nlp.device import autocast_dtype
from pipeline.nlp.ner import NerModel

TEXT = "Pt denies f/c/n/v. Takes metformin daily."


def test_api_annotate_uses_the_settings_model_and_returns_flags(tiny_model_dir, tmp_path):
    settings = load_settings(workdir=tmp_path, ner_model_path=tiny_model_dir, device="cpu")
    [rows, empty, none] = annotate([TEXT, "", None], settings=settings)
    assert empty == [] and none == []
    by_text = {r["text"]: r for r in rows}
    # the rule layer is sure of these whatever the (random) tiny model says
    for item in ("f", "c", "n", "v"):
        assert by_text[item]["label"] == "PROBLEM" and by_text[item]["is_negated"]
    assert by_text["metformin"]["label"] == "TREATMENT" and not by_text["metformin"]["is_negated"]
    assert all(TEXT[r["start_char"]:r["end_char"]] == r["text"] for r in rows)
    assert annotate(TEXT, settings=settings) == [rows]
    table = annotations_table(["a"], [rows])
    assert table.schema == ANNOTATION_SCHEMA and table.num_rows == len(rows)
    with pytest.raises(TypeError, match="strings"):
        annotate([b"bytes"], settings=settings)


def test_cli_annotate_text_file_stdin_and_parquet(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EHR_NER_MODEL_PATH", str(tiny_model_dir))
    monkeypatch.setenv("EHR_DEVICE", "cpu")
    note = tmp_path / "note.txt"
    note.write_text(TEXT)
    runner = CliRunner()
    result = runner.invoke(app, ["annotate", str(note), "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {r["doc"] for r in rows} == {str(note)} and any(r["text"] == "metformin" for r in rows)

    result = runner.invoke(app, ["annotate", "-", "--workdir", str(tmp_path)], input="No m/r/g.")
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["text"] for x in result.stdout.splitlines() if x.startswith("{")] == ["m", "r", "g"]

    out = tmp_path / "ents.parquet"
    result = runner.invoke(app, ["annotate", str(tmp_path), "--format", "parquet", "--out", str(out),
                                 "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).num_rows == len(rows)


def test_cli_annotate_bad_input(tiny_model_dir, tmp_path, monkeypatch):
    runner = CliRunner()
    monkeypatch.setenv("COLUMNS", "400")  # Rich's error box must not wrap the message
    monkeypatch.setenv("EHR_NER_MODEL_PATH", str(tmp_path / "no-model"))
    (tmp_path / "a.txt").write_text("fever")
    assert "does not exist" in runner.invoke(app, ["annotate", str(tmp_path / "nope.txt")]).output
    assert "needs --out" in runner.invoke(app, ["annotate", str(tmp_path / "a.txt"), "--format", "parquet"]).output
    result = runner.invoke(app, ["annotate", str(tmp_path / "a.txt"), "--workdir", str(tmp_path)])
    assert result.exit_code == 2 and "no NER model" in result.output
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00bad")
    monkeypatch.setenv("EHR_NER_MODEL_PATH", str(tiny_model_dir))
    assert "not UTF-8" in runner.invoke(app, ["annotate", str(tmp_path / "b.txt")]).output


def test_int8_quantizes_the_linear_layers_and_keeps_running(tiny_model_dir):
    model = NerModel.load(tiny_model_dir, device="cpu", precision="int8", rules=False)
    assert model.fused is None and model.autocast_dtype is None
    kinds = {type(m).__name__ for m in model.model.modules()}
    assert "DynamicQuantizedLinear" in kinds or "Linear" in {k.split(".")[-1] for k in kinds}
    assert not any(type(m) is torch.nn.Linear for m in model.model.modules())
    # one scale per output channel (per-tensor scales cost about three times the F1)
    schemes = {m.weight().qscheme() for m in model.model.modules() if hasattr(m, "weight") and callable(m.weight)}
    assert schemes == {torch.per_channel_affine}
    fp32 = NerModel.load(tiny_model_dir, device="cpu", precision="fp32", rules=False)
    text = "Chest pain and shortness of breath, treated with aspirin. " * 3
    assert len(model.predict([text])) == 1 and len(fp32.predict([text])) == 1
    with pytest.raises(ValueError, match=r"E009.*int8 only on CPU"):
        autocast_dtype(torch.device("cuda"), "int8")
