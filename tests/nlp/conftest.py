"""Fixtures for NER tests: an oracle model that returns known logits (so a test has entities to assert on), and a
tiny random-weight BERT token classifier on the MiniLM tokenizer (never trained: for loading and plumbing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from pipeline.nlp.labels import bio_labels
from pipeline.nlp.train import base_model_dir

LABELS = bio_labels()


class OracleModel(torch.nn.Module):
    """Tags by token id: 'chest' → B-PROBLEM, 'pain' → I-PROBLEM, 'as ##pi ##rin' → B/I-TREATMENT; the rest O."""

    def __init__(self, tokenizer):
        super().__init__()
        self.config = type("Config", (), {})()
        self.config.id2label = dict(enumerate(LABELS))
        self.config.max_position_embeddings = 512
        table = torch.full((tokenizer.vocab_size,), LABELS.index("O"), dtype=torch.long)
        for word, entity, inside in (("chest", "PROBLEM", False), ("pain", "PROBLEM", True), ("aspirin", "TREATMENT", False)):
            for k, token_id in enumerate(tokenizer(word, add_special_tokens=False)["input_ids"]):
                table[token_id] = LABELS.index(f"{'I' if inside or k else 'B'}-{entity}")
        self.table = table
        self.calls = []

    def forward(self, input_ids, attention_mask):
        self.calls.append(tuple(input_ids.shape))
        logits = torch.nn.functional.one_hot(self.table[input_ids], len(LABELS)).float() * 10

        class Out:
            pass

        out = Out()
        out.logits = logits
        return out


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)


def oracle(tokenizer, max_length=12, stride=4, budget=64):
    """A NerModel ("oracle" version "1") over :class:`OracleModel`: 'chest pain' is a PROBLEM, 'aspirin' a TREATMENT."""
    from pipeline.nlp.ner import NerModel

    return NerModel(
        OracleModel(tokenizer), tokenizer, name="oracle", version="1", device=torch.device("cpu"),
        max_length=max_length, token_budget=budget, stride=stride,
    )


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
def tiny_model(tiny_model_dir):
    from pipeline.nlp.ner import NerModel

    return NerModel.load(tiny_model_dir, device="cpu", max_length=32, token_budget=256, stride=6)
