"""The NER stage: notes record batches in, note_entities record batches out (schemas/tables/note_entities.yaml)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contracts import arrow_schema
from pipeline.nlp.assertion import FLAGS, AssertionAnnotator
from pipeline.nlp.errors import E007
from pipeline.nlp.ner import NerModel

log = logging.getLogger(__name__)

NOTE_ENTITIES_SCHEMA = arrow_schema("note_entities")
REQUIRED_COLUMNS = ("note_id", "subject_id", "hadm_id", "text", "ds")
# Notes longer than this are counted as long (still processed in full).
LONG_NOTE_CHARS = 100_000
# Notes per chunk is bounded by characters so one chunk's tokens and predictions stay small.
CHUNK_CHARS = 200_000
CHUNK_NOTES = 256
_CONTENT = re.compile(r"[^\W_]")  # a letter or digit: notes without one (blank, "___") are empty


@dataclass
class NerStats:
    """Counts for one partition, filled in while `annotate_partition` runs."""

    notes_in: int = 0
    notes_empty: int = 0
    notes_null: int = 0
    notes_long: int = 0
    notes_non_ascii: int = 0  # processed like any other; counted because real exports mangle encodings
    entities_out: int = 0
    windows: int = 0
    tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Chunk:
    note_id: pa.Array
    subject_id: pa.Array
    hadm_id: pa.Array
    ds: pa.Array
    texts: list[str | None]  # None for null/empty notes: the model skips them


def _chunks(batches: Iterable[pa.RecordBatch], stats: NerStats) -> Iterator[_Chunk]:
    for batch in batches:
        for column in REQUIRED_COLUMNS:
            if column not in batch.schema.names:
                raise KeyError(E007.format(column=column))
        text_column = batch.column("text")
        stats.notes_non_ascii += int(pc.sum(pc.invert(pc.string_is_ascii(text_column))).as_py() or 0)
        texts = text_column.to_pylist()
        kept: list[str | None] = []
        for text in texts:
            stats.notes_in += 1
            if text is None:
                stats.notes_null += 1
                kept.append(None)
            elif not _CONTENT.search(text):
                stats.notes_empty += 1
                kept.append(None)
            else:
                if len(text) > LONG_NOTE_CHARS:
                    stats.notes_long += 1
                kept.append(text)
        begin = 0
        while begin < len(kept):
            end, chars = begin, 0
            while end < len(kept) and end - begin < CHUNK_NOTES and (end == begin or chars < CHUNK_CHARS):
                chars += len(kept[end] or "")
                end += 1
            yield _Chunk(
                batch.column("note_id").slice(begin, end - begin),
                batch.column("subject_id").slice(begin, end - begin),
                batch.column("hadm_id").slice(begin, end - begin),
                batch.column("ds").slice(begin, end - begin),
                kept[begin:end],
            )
            begin = end


def annotate_partition(
    batches: Iterable[pa.RecordBatch],
    model: NerModel,
    annotator: AssertionAnnotator,
    *,
    run_id: str,
    stats: NerStats | None = None,
) -> Iterator[pa.RecordBatch]:
    """Entities with assertion flags and sections for every note in `batches` (the canonical notes table).

    Yields one note_entities record batch per chunk of notes (possibly empty); pass `stats` to get the counts.
    Input is consumed lazily, so memory stays bounded by a couple of chunks whatever the partition size.
    """
    stats = stats if stats is not None else NerStats()
    pending: list[_Chunk] = []

    def texts_of_chunks() -> Iterator[list[str | None]]:
        for chunk in _chunks(batches, stats):
            pending.append(chunk)
            yield chunk.texts

    for entities, chunk_stats in model.predict_chunks(texts_of_chunks()):
        chunk = pending.pop(0)
        stats.windows += chunk_stats.windows
        stats.tokens += chunk_stats.tokens
        out = _entities_batch(chunk, entities, model, annotator, run_id)
        stats.entities_out += out.num_rows
        yield out
    log.info("ner partition done: %s", stats.as_dict())


def _entities_batch(chunk: _Chunk, entities, model: NerModel, annotator: AssertionAnnotator, run_id: str):
    rows: list[int] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    labels: list[str] = []
    scores: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    sections: list[str | None] = []
    texts: list[str] = []
    for i, (text, found) in enumerate(zip(chunk.texts, entities, strict=True)):
        if not found or text is None:
            continue
        # The note was tokenised once for the model; the same sentence boundaries serve ConText.
        assertions = annotator.annotate(text, found.starts, found.ends, found.labels, found.sentence_chars)
        rows.extend([i] * len(found))
        starts.append(found.starts)
        ends.append(found.ends)
        labels.extend(found.labels)
        scores.append(found.scores)
        flags.append(assertions.flags)
        sections.extend(assertions.sections)
        texts.extend(text[s:e] for s, e in zip(found.starts.tolist(), found.ends.tolist(), strict=True))
    take = pa.array(rows, type=pa.int64())
    n = len(rows)
    flag_matrix = np.concatenate(flags) if flags else np.zeros((0, len(FLAGS)), dtype=bool)
    columns = {
        "note_id": chunk.note_id.take(take),
        "subject_id": chunk.subject_id.take(take),
        "hadm_id": chunk.hadm_id.take(take),
        "ds": chunk.ds.take(take),
        "label": pa.array(labels, type=pa.string()),
        "text": pa.array(texts, type=pa.string()),
        "start_char": pa.array(np.concatenate(starts) if starts else [], type=pa.int32()),
        "end_char": pa.array(np.concatenate(ends) if ends else [], type=pa.int32()),
        "section": pa.array(sections, type=pa.string()),
        "score": pa.array(np.concatenate(scores) if scores else [], type=pa.float64()),
        **{flag: pa.array(flag_matrix[:, k], type=pa.bool_()) for k, flag in enumerate(FLAGS)},
        "model_name": pa.array([model.name] * n, type=pa.string()),
        "model_version": pa.array([model.version] * n, type=pa.string()),
        "run_id": pa.array([run_id] * n, type=pa.string()),
    }
    # in the contract's column order, cast to its types (e.g. a large_string note_id)
    return pa.RecordBatch.from_pydict(columns, schema=NOTE_ENTITIES_SCHEMA)
