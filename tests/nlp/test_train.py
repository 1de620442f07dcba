import numpy as np
import pytest
from transformers import AutoTokenizer

from pipeline.nlp.labels import bio_labels
from pipeline.nlp.train import (
    base_model_dir,
    build_examples,
    corpus_fingerprint,
    match_entities,
    score_predictions,
    token_labels,
    training_autocast_dtype,
)
from tests.nlp.corpus import Gold, tiny_corpus

LABEL2ID = {label: i for i, label in enumerate(bio_labels())}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)


def test_train_token_labels_bio(tokenizer):
    text = "denies chest pain, took metoprolol"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.asarray(enc["offset_mapping"])
    ents = [Gold(7, 17, "PROBLEM", "chest pain"), Gold(24, 34, "TREATMENT", "metoprolol")]
    tags = [bio_labels()[i] for i in token_labels(offsets, ents, LABEL2ID)]
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert tags[tokens.index("chest")] == "B-PROBLEM" and tags[tokens.index("pain")] == "I-PROBLEM"
    first = next(i for i, (s, _) in enumerate(offsets) if s == 24)
    assert tags[first] == "B-TREATMENT" and all(t == "I-TREATMENT" for t in tags[first + 1 :])


def test_train_examples_are_sentence_windows(tokenizer):
    examples = build_examples(tiny_corpus(), tokenizer, LABEL2ID, window_tokens=12)
    assert all(len(ex.ids) <= 12 for ex in examples) and len(examples) > 4
    total = sum(len(ex.ids) for ex in examples)
    assert total == sum(len(tokenizer.tokenize(n.text)) for n in tiny_corpus())


def test_train_fingerprint_is_stable_and_content_sensitive():
    corpus = tiny_corpus()
    assert corpus_fingerprint(corpus) == corpus_fingerprint(tiny_corpus())
    corpus[0].entities.pop()
    assert corpus_fingerprint(corpus) != corpus_fingerprint(tiny_corpus())


def test_train_scoring_exact_overlap_and_assertion():
    notes = tiny_corpus()[:1]
    gold = notes[0].entities
    flags = [[g.is_negated, g.is_uncertain, g.is_historical, g.is_family, g.is_hypothetical] for g in gold]
    flags[0][0] = True  # one wrong flag
    pred = {"starts": [g.start_char for g in gold], "ends": [g.end_char for g in gold],
            "labels": [g.label for g in gold], "flags": flags}
    pred["ends"][1] += 1  # one boundary off by a char: overlap match, not exact
    metrics = score_predictions(notes, [pred])
    assert metrics["overlap_f1"] == 1.0 and metrics["exact_f1"] == pytest.approx(5 / 6)
    assert metrics["assertion_accuracy"] == pytest.approx(5 / 6)
    assert metrics["assertion_flag_accuracy"] == pytest.approx(1 - 1 / 30)
    assert match_entities([(0, 5, "A")], [(3, 9, "B")], overlap=True) == []


def test_train_precision_choice(monkeypatch):
    import torch

    assert training_autocast_dtype("fp32") is None
    assert training_autocast_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        training_autocast_dtype("fp16")
    # auto: bf16 only where the CPU multiplies bf16 natively (AVX-512 BF16 or AMX), else fp32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert training_autocast_dtype("auto") is None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert training_autocast_dtype("auto") is torch.bfloat16


@pytest.mark.slow
def test_train_ner_end_to_end_on_tiny_corpus(tmp_path):
    from pipeline.nlp.ner import NerModel
    from pipeline.nlp.train import train_ner

    calls = []
    card = train_ner(tmp_path / "m", notes=tiny_corpus() * 4, epochs=1, seed=0, eval_notes=tiny_corpus(),
                     progress=lambda step, total, m: calls.append((step, total)), max_seconds=60, batch_size=4)
    assert calls and calls[-1][0] == calls[-1][1]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "model_card.json"):
        assert (tmp_path / "m" / name).exists()
    assert set(card["eval"]) >= {"exact_f1", "overlap_f1", "assertion_accuracy", "per_label"}
    assert card["training"]["frozen_word_embeddings"] and card["training"]["precision"] in ("bfloat16", "float32")
    model = NerModel.load(tmp_path / "m", device="cpu")
    assert model.name == card["name"] and model.version == card["version"]


@pytest.mark.slow
def test_train_ner_fixed_steps_are_reproducible_and_never_cut_by_the_clock(tmp_path):
    from pipeline.nlp.train import train_ner

    cards = [train_ner(tmp_path / name, notes=tiny_corpus() * 4, steps=3, seed=7, batch_size=4, frozen_layers=1,
                       max_seconds=0.001) for name in ("a", "b")]
    for card in cards:
        # a tiny time budget is recorded, never obeyed: all planned steps run
        assert card["training"]["steps"] == card["training"]["planned_steps"] == 3
        assert card["training"]["over_time_budget"] is True and card["training"]["frozen_layers"] == 1
    assert cards[0]["weights_sha256"] == cards[1]["weights_sha256"]
    other = train_ner(tmp_path / "c", notes=tiny_corpus() * 4, steps=3, seed=8, batch_size=4, frozen_layers=1)
    assert other["weights_sha256"] != cards[0]["weights_sha256"]
