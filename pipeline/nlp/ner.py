"""Token-classification inference over whole notes: windows, token-budget batches, merged predictions.

The hot path: each chunk of notes is tokenised once (fast tokenizer, offsets kept), cut into windows, sorted by
length and batched by a token budget in a background thread, while the model runs on the previous chunk.
Predictions are merged per token (the window where the token is farthest from an edge wins), decoded from
BIO/IOB2 tags, widened to whole words and mapped back to exact character offsets of the original note.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.device import resolve_device
from pipeline.nlp import device as devices
from pipeline.nlp.batching import TokenBatch, build_batch, plan_batches, prefetch
from pipeline.nlp.errors import E001, E002, E010, E011
from pipeline.nlp.fused import fuse_token_classifier
from pipeline.nlp.labels import LabelScheme
from pipeline.nlp.windows import (
    CASE_TYPE_COUNT,
    TOKEN_TYPE_SCHEMES,
    NoteTokens,
    case_types,
    make_windows,
    sentence_starts,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 256
DEFAULT_STRIDE = 32
CARD_FILE = "model_card.json"


@dataclass
class NoteEntities:
    """Entities the model found in one note: char offsets into the note (end exclusive), label, mean token prob."""

    starts: np.ndarray
    ends: np.ndarray
    labels: list[str]
    scores: np.ndarray
    # Where the note's sentences start (chars), as found when windowing: reused by assertion, not re-split.
    sentence_chars: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> NoteEntities:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), [], np.zeros(0, np.float64))


@dataclass
class ChunkStats:
    windows: int = 0
    tokens: int = 0
    batches: int = 0
    padded_tokens: int = 0
    model_tokens: int = 0  # real tokens fed to the model: with [CLS]/[SEP] and window overlap, without padding


@dataclass
class _PreparedChunk:
    notes: list[NoteTokens]
    window_note: np.ndarray
    window_start: np.ndarray
    window_own_start: np.ndarray
    window_own_end: np.ndarray
    batches: list[TokenBatch]
    sentence_chars: list[np.ndarray | None]
    stats: ChunkStats = field(default_factory=ChunkStats)
    texts: Sequence[str | None] = ()


def _empty_tokens() -> NoteTokens:
    return NoteTokens(np.zeros(0, np.int64), np.zeros((0, 2), np.int64), np.zeros(0, np.int64))


def _word_bounds(word_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each token, the index of the first and one past the last token of its word."""
    n = word_ids.shape[0]
    idx = np.arange(n)
    new_word = np.ones(n, dtype=bool)
    new_word[1:] = (word_ids[1:] != word_ids[:-1]) | (word_ids[1:] < 0)
    first = np.maximum.accumulate(np.where(new_word, idx, 0))
    last_word = np.ones(n, dtype=bool)
    last_word[:-1] = new_word[1:]
    last = np.minimum.accumulate(np.where(last_word, idx, n - 1)[::-1])[::-1]
    return first, last + 1


def read_model_card(path: Path) -> dict:
    card_path = Path(path) / CARD_FILE
    if card_path.exists():
        return json.loads(card_path.read_text())
    return {}


WEIGHTS_CHECKSUM_KEY = "weights_sha256"


class ModelIntegrityError(RuntimeError):
    """A checkpoint whose weights differ from the checksums its model card recorded at training time."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_checksums(path: Path) -> dict[str, str]:
    """sha256 of every safetensors file in the model folder, by file name (what the model card records)."""
    return {p.name: file_sha256(p) for p in sorted(Path(path).glob("*.safetensors"))}


def verify_weights(path: Path, card: dict) -> bool:
    """Check the folder's weights against the card's checksums; raise ModelIntegrityError on any difference.

    Returns False (nothing to check against) for a card without checksums, e.g. a model from elsewhere.
    """
    expected = card.get(WEIGHTS_CHECKSUM_KEY)
    if not expected:
        return False
    for name, digest in expected.items():
        file = Path(path) / name
        if not file.is_file():
            raise ModelIntegrityError(E011.format(path=path, file=name))
        found = file_sha256(file)
        if found != digest:
            raise ModelIntegrityError(E010.format(file=name, path=path, expected=digest[:16] + "…",
                                                  found=found[:16] + "…"))
    return True


class NerModel:
    """A local token-classification checkpoint ready for batched inference. Load once per task."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        name: str,
        version: str,
        device: torch.device,
        max_length: int,
        token_budget: int,
        stride: int = DEFAULT_STRIDE,
        path: Path | None = None,
        precision: str = "auto",
        fused_cpu: bool = True,
        rules=None,
        token_types: str | None = None,
    ) -> None:
        self.model = model
        if token_types is not None and token_types not in TOKEN_TYPE_SCHEMES:
            raise ValueError(f"token_types {token_types!r} is not one of {TOKEN_TYPE_SCHEMES}")
        # "case": token type ids carry letter case (windows.case_types), as the checkpoint was trained; None: zeros
        if token_types == "case" and int(getattr(model.config, "type_vocab_size", 0)) < CASE_TYPE_COUNT:
            raise ValueError(f"the model card asks for token_types 'case' but the model has "
                             f"{getattr(model.config, 'type_vocab_size', 0)} token types, not {CASE_TYPE_COUNT}")
        self.token_types = token_types
        # the rule layer after the model (pipeline.nlp.refine.RuleLayer), or None for the model's raw spans
        self.rules = rules
        self.tokenizer = tokenizer
        self.name = name
        self.version = version
        self.device = device
        self.max_length = max_length
        self.stride = stride
        self.path = path
        self.scheme = LabelScheme.from_id2label(model.config.id2label)
        self.oom = devices.OomGuard(token_budget)
        self.autocast_dtype = devices.autocast_dtype(device, precision)
        self.precision = precision
        if precision == "int8":
            self.model = model = devices.quantize_linear_int8(model)
            fused_cpu = False  # the fused kernels read fp32 weights
        # fp32 on CPU: the same logits from fused oneDNN kernels (None → the transformers forward)
        self.fused = fuse_token_classifier(model, device, self.autocast_dtype) if fused_cpu else None
        self.cls_id = int(tokenizer.cls_token_id)
        self.sep_id = int(tokenizer.sep_token_id)
        self.pad_id = int(tokenizer.pad_token_id or 0)

    @property
    def token_budget(self) -> int:
        return self.oom.token_budget

    @classmethod
    def load(
        cls,
        path: Path,
        device: str = "auto",
        max_length: int | None = None,
        token_budget: int | None = None,
        stride: int = DEFAULT_STRIDE,
        precision: str = "auto",
        fused_cpu: bool = True,
        rules: bool = True,
    ) -> NerModel:
        """Load a local safetensors checkpoint (no hub, no remote code); name and version come from its card.

        The weights are checked against the card's sha256 first (a changed file is refused). `rules`: run the rule
        layer of pipeline/nlp/refine.py (schemas/nlp/ner_rules.json and vocab/) after the model.
        """
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(E001.format(path=path))
        if not any(path.glob("*.safetensors")):
            raise FileNotFoundError(E002.format(path=path))
        card = read_model_card(path)
        # Before the weights are read: a changed checkpoint is refused, never half-trusted.
        if not verify_weights(path, card):
            log.warning("NER model %s: its card records no weights checksum, so its integrity is not checked", path)
        torch_device = resolve_device(device)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        model = AutoModelForTokenClassification.from_pretrained(
            path, local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
        model.eval().to(torch_device)
        limits = [int(model.config.max_position_embeddings)]
        if 0 < int(getattr(tokenizer, "model_max_length", 0) or 0) < 1_000_000:
            limits.append(int(tokenizer.model_max_length))
        wanted = max_length or int(card.get("max_length", DEFAULT_MAX_LENGTH))
        version = str(card.get("version") or _config_digest(path))
        return cls(
            model,
            tokenizer,
            name=str(card.get("name") or path.name),
            version=version,
            device=torch_device,
            max_length=min([wanted, *limits]),
            token_budget=token_budget or devices.default_token_budget(torch_device, _widest(model.config)),
            stride=stride,
            path=path,
            precision=precision,
            fused_cpu=fused_cpu,
            rules=_rule_layer() if rules else None,
            token_types=card.get("token_types"),
        )

    # -- tokenisation and windows (runs in the prefetch thread) ------------------------------------------------

    def encode(self, texts: Sequence[str | None]) -> list[NoteTokens]:
        present = [i for i, t in enumerate(texts) if t]
        notes = [_empty_tokens() for _ in texts]
        if not present:
            return notes
        encoded = self.tokenizer(
            [texts[i] for i in present],
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            truncation=False,
            verbose=False,
        )
        for i, enc in zip(present, encoded.encodings, strict=True):
            ids = np.asarray(enc.ids, dtype=np.int64)
            offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
            word_ids = np.asarray([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)
            types = case_types(texts[i], offsets) if self.token_types == "case" else None
            notes[i] = NoteTokens(ids, offsets, word_ids, types)
        return notes

    def _prepare(self, texts: Sequence[str | None]) -> _PreparedChunk:
        notes = self.encode(texts)
        content = self.max_length - 2
        note_idx, starts, ends, own_starts, own_ends = [], [], [], [], []
        sentence_chars: list[np.ndarray | None] = [None] * len(notes)
        for i, (text, note) in enumerate(zip(texts, notes, strict=True)):
            if len(note) == 0:
                continue
            sent_starts = sentence_starts(text, note.offsets)
            sentence_chars[i] = note.offsets[sent_starts, 0]
            w = make_windows(len(note), sent_starts, content, self.stride)
            note_idx.append(np.full(len(w), i, dtype=np.int64))
            starts.append(w.start)
            ends.append(w.end)
            own_starts.append(w.own_start)
            own_ends.append(w.own_end)
        window_note, window_start, window_end = _cat(note_idx), _cat(starts), _cat(ends)
        lengths = window_end - window_start
        batches = []
        for rows in plan_batches(lengths + 2, self.oom.token_budget):
            ids = [notes[window_note[w]].ids[window_start[w] : window_end[w]] for w in rows]
            types = None if self.token_types is None else [
                notes[window_note[w]].types[window_start[w] : window_end[w]] for w in rows]
            batches.append(build_batch(ids, rows, self.cls_id, self.sep_id, self.pad_id, types))
        stats = ChunkStats(
            windows=len(lengths),
            tokens=int(sum(len(n) for n in notes)),
            batches=len(batches),
            padded_tokens=int(sum(b.input_ids.size for b in batches)),
            model_tokens=int(sum(b.tokens for b in batches)),
        )
        return _PreparedChunk(
            notes, window_note, window_start, _cat(own_starts), _cat(own_ends), batches, sentence_chars, stats, texts
        )

    # -- model ----------------------------------------------------------------------------------------------------

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The model's logits for one batch: the fused CPU forward where it is on, else the transformers one."""
        if self.fused is not None:
            return self.fused(input_ids, attention_mask, token_type_ids)
        # token types only when the checkpoint uses them: some architectures (DistilBERT) take no such argument
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

    def batch_logits(self, batch: TokenBatch) -> torch.Tensor:
        """Logits of one host batch (moved to the device); call under inference mode."""
        return self.logits(*devices.to_device(batch, self.device))

    def _forward(self, batch: TokenBatch) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode(), devices.autocast(self.device, self.autocast_dtype):
            probs, preds = self.batch_logits(batch).float().softmax(dim=-1).max(dim=-1)
        return preds.cpu().numpy(), probs.cpu().numpy()

    def _run_chunk(self, chunk: _PreparedChunk) -> list[NoteEntities]:
        label_ids = [np.zeros(len(n), dtype=np.int64) for n in chunk.notes]
        token_probs = [np.zeros(len(n), dtype=np.float32) for n in chunk.notes]
        for batch in chunk.batches:
            for part, (preds, probs) in self.oom.run(self._forward, batch):
                for row, w in enumerate(part.window_index):
                    n = chunk.window_note[w]
                    s, a, b = chunk.window_start[w], chunk.window_own_start[w], chunk.window_own_end[w]
                    label_ids[n][a:b] = preds[row, 1 + a - s : 1 + b - s]
                    token_probs[n][a:b] = probs[row, 1 + a - s : 1 + b - s]
        found = [
            self._decode(note, ids, probs) for note, ids, probs in zip(chunk.notes, label_ids, token_probs, strict=True)
        ]
        for entities, sentence_chars in zip(found, chunk.sentence_chars, strict=True):
            entities.sentence_chars = sentence_chars
        if self.rules is not None:
            from pipeline.nlp.refine import refine_entities

            found = [refine_entities(text, entities, self.rules) if text else entities
                     for text, entities in zip(chunk.texts, found, strict=True)]
        return found

    def _decode(self, note: NoteTokens, label_ids: np.ndarray, probs: np.ndarray) -> NoteEntities:
        if len(note) == 0:
            return NoteEntities.empty()
        tok_starts, tok_ends, types = self.scheme.decode(label_ids)
        if len(tok_starts) == 0:
            return NoteEntities.empty()
        # Widen to whole words: a subword tag never cuts a word in two.
        first, last = _word_bounds(note.word_ids)
        tok_starts = first[tok_starts]
        tok_ends = last[tok_ends - 1]
        # Spans that now share a word merge into the first one.
        prev_end = np.concatenate(([-1], np.maximum.accumulate(tok_ends)[:-1]))
        keep = np.flatnonzero(tok_starts >= prev_end)
        tok_ends = np.maximum.reduceat(tok_ends, keep)
        tok_starts, types = tok_starts[keep], types[keep]
        cum = np.concatenate(([0.0], np.cumsum(probs, dtype=np.float64)))
        scores = (cum[tok_ends] - cum[tok_starts]) / (tok_ends - tok_starts)
        labels = [self.scheme.entity_types[t] for t in types]
        return NoteEntities(note.offsets[tok_starts, 0], note.offsets[tok_ends - 1, 1], labels, scores)

    # -- public -----------------------------------------------------------------------------------------------------

    def predict_chunks(
        self, chunks: Iterable[Sequence[str | None]], prefetch_depth: int = 2
    ) -> Iterator[tuple[list[NoteEntities], ChunkStats]]:
        """Entities per note for each chunk of notes; the next chunk is tokenised while this one runs."""
        for prepared in prefetch((self._prepare(texts) for texts in chunks), depth=prefetch_depth):
            yield self._run_chunk(prepared), prepared.stats

    def predict(self, texts: Sequence[str | None]) -> list[NoteEntities]:
        """Entities per note for a list of notes (one chunk)."""
        if not texts:
            return []
        chunk = self._prepare(texts)
        return self._run_chunk(chunk)


def _rule_layer():
    from pipeline.nlp.refine import default_layer

    return default_layer()


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _widest(config) -> int | None:
    """The widest per-token activation of an encoder layer (its feed-forward width), when the config tells it."""
    width = getattr(config, "intermediate_size", None) or getattr(config, "hidden_size", 0) * 4
    return int(width) or None


def _config_digest(path: Path) -> str:
    """A version for a model without a card: config and weights, so a changed checkpoint gets a new version."""
    digest = hashlib.sha256((Path(path) / "config.json").read_bytes())
    for name, file_digest in weights_checksums(path).items():
        digest.update(f"|{name}:{file_digest}".encode())
    digest = digest.hexdigest()
    return f"sha256-{digest[:12]}"
