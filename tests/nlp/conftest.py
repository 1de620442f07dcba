"""Fixtures for NER tests: a tiny random-weight BERT token classifier on the MiniLM tokenizer (never trained)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.nlp.labels import bio_labels
from pipeline.nlp.train import base_model_dir


def build_tiny_model(out_dir: Path, labels: list[str] | None = None, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    labels = labels or bio_labels()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = BertForTokenClassification(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "model_card.json").write_text(json.dumps({"name": "tiny-ner", "version": "0.0.1-test"}))
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_ner"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from pipeline.nlp.ner import NerModel

    return NerModel.load(tiny_model_dir, device="cpu", max_length=32, token_budget=256, stride=6)
