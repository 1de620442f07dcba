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


def test_phi_tagger_keeps_only_findings_scoring_the_threshold(tiny_phi_dir, monkeypatch):
    """A token counts at P(identifier) >= threshold, but the word-widened finding scores the mean of its tokens:
    a finding whose mean falls under the threshold ("dial" tipping "dialyze") is dropped, so no evidence shows a
    score below the threshold."""
    import numpy as np

    from pipeline.nlp.ner import NoteEntities

    text = "Dr Quist will dialyze tomorrow."
    decoded = NoteEntities(np.array([3, 14]), np.array([8, 21]), ["NAME", "NAME"], np.array([0.91, 0.32]))
    tagger = load_phi_tagger(tiny_phi_dir, threshold=0.5)
    monkeypatch.setattr(tagger, "predict", lambda texts: [decoded for _ in texts])
    assert tagger.find([text]) == [[(3, 8, "NAME", 0.91)]]
    tagger.threshold = 0.3
    assert [text[s:e] for s, e, *_ in tagger.find([text])[0]] == ["Quist", "dialyze"]


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
    config = json.loads((tmp_path / "phi" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    # letter case reaches the uncased model as token types (title, capitals, other), and the card says so
    assert card["token_types"] == "case" and config["type_vocab_size"] == 3
    tagger = load_phi_tagger(tmp_path / "phi")
    assert tagger.token_types == "case"
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


def test_case_token_types_reach_the_model_on_both_forwards(tmp_path, tiny_phi_dir):
    """A card with "token_types": "case" makes inference give each token its case type, through the fused and the
    transformers forward alike; widening the type embeddings changes nothing until training moves them."""
    import shutil

    import numpy as np
    import torch
    from transformers import AutoModelForTokenClassification

    from pipeline.nlp.batching import build_batch
    from pipeline.nlp.phi import widen_token_types
    from pipeline.nlp.windows import CASE_TITLE, CASE_UPPER

    model = AutoModelForTokenClassification.from_pretrained(tiny_phi_dir, local_files_only=True)
    ids = torch.randint(1000, 2000, (2, 9))
    types = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 2]] * 2)
    with torch.no_grad():
        before = model(input_ids=ids).logits
        widen_token_types(model, 3)
        after_zero = model(input_ids=ids).logits
        after_typed = model(input_ids=ids, token_type_ids=types).logits
    assert model.config.type_vocab_size == 3
    assert torch.allclose(before, after_zero) and torch.allclose(before, after_typed)
    with torch.no_grad():  # as if training had moved the rows apart
        model.base_model.embeddings.token_type_embeddings.weight[CASE_UPPER] += torch.randn(model.config.hidden_size)
    out = tmp_path / "cased"
    shutil.copytree(tiny_phi_dir, out)
    model.save_pretrained(out, safe_serialization=True)
    card = json.loads((out / "model_card.json").read_text()) | {"token_types": "case"}
    card.pop("weights_sha256", None)
    (out / "model_card.json").write_text(json.dumps(card))

    tagger = load_phi_tagger(out, threshold=0.05)
    assert tagger.token_types == "case" and tagger.fused is not None
    note = tagger.encode(["Dr. Nash: NASH cirrhosis"])[0]
    assert CASE_TITLE in note.types.tolist() and CASE_UPPER in note.types.tolist()
    batch = build_batch([note.ids], np.array([0]), tagger.cls_id, tagger.sep_id, tagger.pad_id, [note.types])
    assert batch.token_type_ids[0, 0] == 0 and batch.token_type_ids[0, 1:-1].tolist() == note.types.tolist()
    with torch.inference_mode():
        fused = tagger.batch_logits(batch)
        plain = tagger.model(input_ids=torch.from_numpy(batch.input_ids),
                             attention_mask=torch.from_numpy(batch.attention_mask),
                             token_type_ids=torch.from_numpy(batch.token_type_ids)).logits
        untyped = tagger.model(input_ids=torch.from_numpy(batch.input_ids)).logits
    assert torch.allclose(fused, plain, atol=1e-4) and not torch.allclose(plain, untyped, atol=1e-4)
    halves = batch.split()
    assert all(h.token_type_ids is not None and h.token_type_ids.shape == h.input_ids.shape for h in halves)

    (out / "model_card.json").write_text(json.dumps(card | {"token_types": "shape"}))
    with pytest.raises(PhiTaggerError, match="token_types"):
        load_phi_tagger(out)
    # a card that asks for case types on a model without the three rows is refused, not an index error later
    (out / "model_card.json").write_text(json.dumps(card))
    shutil.copy(tiny_phi_dir / "config.json", out / "config.json")
    shutil.copy(tiny_phi_dir / "model.safetensors", out / "model.safetensors")
    with pytest.raises(PhiTaggerError, match="2 token types, not 3"):
        load_phi_tagger(out)


def test_train_phi_refuses_an_unknown_token_type_scheme(tmp_path):
    with pytest.raises(ValueError, match="token_types 'shape'"):
        train_phi(tmp_path / "phi", [], token_types="shape")
    assert not (tmp_path / "phi").exists()
