"""PHI tagger: loads only PHI checkpoints (fails closed), thresholds P(identifier), trains with fixed steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.nlp.labels import bio_labels
from pipeline.nlp.phi import PHI_ENTITY_TYPES, PhiTaggerError, load_phi_tagger, train_phi

from .conftest import build_tiny_model


@pytest.fixture(scope="module")
def tiny_phi_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_phi"), labels=bio_labels(PHI_ENTITY_TYPES), seed=3)


def test_phi_tagger_threshold_trades_findings(tiny_phi_dir):
    texts = ["Spoke with daughter Anna Quist at 617 555 0199.", None, ""]
    low = load_phi_tagger(tiny_phi_dir, threshold=0.05).find(texts)
    high = load_phi_tagger(tiny_phi_dir, threshold=0.999).find(texts)
    assert len(low) == len(high) == 3 and low[1] == low[2] == []
    assert low[0], "random weights: P(not O) is far above 0.05 on every token"
    assert high[0] == []
    for start, end, entity, score in low[0]:
        assert 0 <= start < end <= len(texts[0]) and entity in PHI_ENTITY_TYPES and 0.05 <= score <= 1.0


def test_phi_tagger_fails_closed(tmp_path, tiny_model_dir, tiny_phi_dir):
    with pytest.raises(PhiTaggerError, match="cannot be loaded"):
        load_phi_tagger(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not a model")
    (broken / "config.json").write_text("{}")
    with pytest.raises(PhiTaggerError):
        load_phi_tagger(broken)
    with pytest.raises(PhiTaggerError, match="not a PHI model"):
        load_phi_tagger(tiny_model_dir)  # the clinical NER labels
    with pytest.raises(PhiTaggerError, match="threshold"):
        load_phi_tagger(tiny_phi_dir, threshold=1.5)


def test_train_phi_fixed_steps(tmp_path):
    from pipeline.synth.phi import phi_training_notes

    calls = []
    card = train_phi(tmp_path / "phi", phi_training_notes(12), steps=3, layers=1, batch_size=4,
                     progress=lambda step, total, m: calls.append((step, total)))
    assert [c[0] for c in calls] == [1, 2, 3] and card["training"]["steps"] == 3
    assert card["entity_types"] == list(PHI_ENTITY_TYPES) and card["training"]["layers"] == 1
    assert json.loads((tmp_path / "phi" / "config.json").read_text())["num_hidden_layers"] == 1
    tagger = load_phi_tagger(tmp_path / "phi")
    assert tagger.name == "ehr-phi-tagger-minilm" and len(tagger.find(["Mr. Quist seen today."])) == 1
    # only identifier types: the clinical NER rule layer never runs on the tagger (it tagged drugs as findings)
    found = tagger.find(["Home meds: Toprol, Lasix, Coumadin. Denies chest pain, s/p CABG x3."])[0]
    assert {kind for _, _, kind, _ in found} <= set(PHI_ENTITY_TYPES), found
    # the card carries the weights' checksum: a changed weights file is refused on load
    assert set(card["weights_sha256"]) == {"model.safetensors"}
    weights = tmp_path / "phi" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(100)
    weights.write_bytes(bytes(data))
    with pytest.raises(PhiTaggerError, match="E010"):
        load_phi_tagger(tmp_path / "phi")
