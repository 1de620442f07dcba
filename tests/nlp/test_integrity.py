"""Model integrity: the card records the weights' sha256; a changed or missing file is refused on load."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

from pipeline.nlp.ner import ModelIntegrityError, NerModel, _config_digest, verify_weights, weights_checksums


@pytest.fixture
def signed_model(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    card = json.loads((folder / "model_card.json").read_text())
    card["weights_sha256"] = weights_checksums(folder)
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


def test_integrity_signed_model_loads(signed_model):
    card = json.loads((signed_model / "model_card.json").read_text())
    assert set(card["weights_sha256"]) == {"model.safetensors"}
    assert verify_weights(signed_model, card) is True
    assert NerModel.load(signed_model, device="cpu", rules=False).name == "tiny-ner"


def test_integrity_random_bytes_in_the_weights_are_refused(signed_model):
    weights = signed_model / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.seek(min(4096, weights.stat().st_size // 2))
        fh.write(os.urandom(1 << 20))
    with pytest.raises(ModelIntegrityError, match=r"E010.*do not match the sha256.*never loaded"):
        NerModel.load(signed_model, device="cpu")


def test_integrity_missing_weights_named_in_the_card_are_refused(signed_model):
    card = json.loads((signed_model / "model_card.json").read_text())
    card["weights_sha256"]["extra.safetensors"] = "0" * 64
    (signed_model / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelIntegrityError, match="E011"):
        NerModel.load(signed_model, device="cpu")


def test_integrity_unsigned_model_loads_with_a_warning_and_its_version_covers_the_weights(
        tiny_model_dir, tmp_path, caplog):
    folder = tmp_path / "unsigned"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model_card.json").unlink()
    before = _config_digest(folder)
    with caplog.at_level(logging.WARNING, logger="pipeline.nlp.ner"):
        model = NerModel.load(folder, device="cpu", rules=False)
    assert "integrity is not checked" in caplog.text and model.version == before
    with open(folder / "model.safetensors", "r+b") as fh:
        fh.seek(4096)
        fh.write(b"\x00" * 64)
    assert _config_digest(folder) != before
