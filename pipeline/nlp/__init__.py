"""Clinical NER stage: notes → note_entities (entities, assertion flags, sections).

    from pipeline.nlp import NerModel, AssertionAnnotator, NerStats, annotate_partition
    model = NerModel.load(path, device="auto")
    annotator = AssertionAnnotator.create()
    stats = NerStats()
    for out in annotate_partition(batches, model, annotator, run_id=run_id, stats=stats): ...

Annotating any text with the configured model: `annotate(texts)` (pipeline/nlp/api.py).

Training and evaluation (`train_ner`, `evaluate_ner`) are imported lazily. The benchmark is `pipeline.bench.ner`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.nlp.api import annotate, annotations_table
from pipeline.nlp.assertion import AssertionAnnotator
from pipeline.nlp.ner import NerModel, NoteEntities
from pipeline.nlp.stage import NOTE_ENTITIES_SCHEMA, NerStats, annotate_partition

if TYPE_CHECKING:
    from pipeline.nlp.train import evaluate_ner, train_ner

__all__ = [
    "NOTE_ENTITIES_SCHEMA",
    "AssertionAnnotator",
    "NerModel",
    "NerStats",
    "NoteEntities",
    "annotate",
    "annotate_partition",
    "annotations_table",
    "evaluate_ner",
    "train_ner",
]


def __getattr__(name: str) -> Any:
    if name in ("train_ner", "evaluate_ner"):
        from pipeline.nlp import train

        return getattr(train, name)
    raise AttributeError(name)
