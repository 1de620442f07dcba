import re

import numpy as np
import pytest

from pipeline.nlp.ner import NerModel
from tests.nlp.conftest import oracle


def expected(text):
    found = [(m.start(), m.end(), "PROBLEM") for m in re.finditer(r"chest pain", text, flags=re.I)]
    found += [(m.start(), m.end(), "TREATMENT") for m in re.finditer(r"aspirin", text, flags=re.I)]
    return sorted(found)


def got(text, entities):
    return sorted(zip(entities.starts.tolist(), entities.ends.tolist(), entities.labels, strict=True))


def test_ner_offsets_exact_with_multibyte_text(tokenizer):
    text = "Café ☃ naïve 😀 patient with Chest Pain; given ASPIRIN 325 mg. Zoë has chest pain—again."
    entities = oracle(tokenizer, max_length=64).predict([text])[0]
    assert got(text, entities) == expected(text)
    for s, e in zip(entities.starts, entities.ends, strict=True):
        assert text[s:e].lower() in ("chest pain", "aspirin")


@pytest.mark.parametrize("max_length,stride", [(6, 1), (7, 2), (12, 4), (40, 8)])
def test_ner_entities_across_window_borders_merge(tokenizer, max_length, stride):
    # No sentence breaks: windows are cut hard, so entities straddle window borders.
    text = " ".join(["word chest pain aspirin é"] * 25)
    model = oracle(tokenizer, max_length=max_length, stride=stride)
    entities = model.predict([text])[0]
    assert got(text, entities) == expected(text)
    assert len(model.model.calls) > 1


def test_ner_many_notes_batched_by_token_budget(tokenizer):
    texts = [("Chest pain. " * k) + "Took aspirin." for k in range(1, 30)]
    model = oracle(tokenizer, max_length=16, stride=4, budget=64)
    results = model.predict(texts)
    for text, entities in zip(texts, results, strict=True):
        assert got(text, entities) == expected(text)
    assert all(rows * width <= 64 or rows == 1 for rows, width in model.model.calls)


def test_ner_predict_chunks_and_empty_inputs(tokenizer):
    model = oracle(tokenizer)
    chunks = [["chest pain", None, "", "   "], ["aspirin"], []]
    out = list(model.predict_chunks(chunks))
    assert [len(found) for found, _ in out] == [4, 1, 0]
    assert [len(e) for e in out[0][0]] == [1, 0, 0, 0]
    assert out[0][1].windows == 1 and out[1][1].tokens == 3


def test_ner_word_pieces_widened_to_words(tokenizer):
    # "painz" = pain + ##z: a tag on "pain" widens to the whole word.
    assert tokenizer.tokenize("painz") == ["pain", "##z"]
    text = "chest painz"
    entities = oracle(tokenizer, max_length=32).predict([text])[0]
    assert got(text, entities) == [(0, 11, "PROBLEM")]


def test_ner_loads_tiny_checkpoint(tiny_model_dir, tiny_model):
    assert tiny_model.name == "tiny-ner" and tiny_model.version == "0.0.1-test"
    text = "Patient with chest pain and ✓ dyspnea. " * 20
    entities = tiny_model.predict([text])[0]
    for s, e in zip(entities.starts.tolist(), entities.ends.tolist(), strict=True):
        assert 0 <= s < e <= len(text) and text[s:e].strip() == text[s:e]
    assert np.all((entities.scores >= 0) & (entities.scores <= 1))


def test_ner_refuses_missing_or_unsafe_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="E001"):
        NerModel.load(tmp_path / "absent")
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="E002"):
        NerModel.load(tmp_path / "pt")


def test_ner_refuses_a_missing_gpu(monkeypatch, tiny_model_dir):
    """NER loads its model through pipeline.device: a missing GPU is an error, never a silent CPU run."""
    import torch

    from pipeline.device import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="D002"):
        NerModel.load(tiny_model_dir, device="cuda")
