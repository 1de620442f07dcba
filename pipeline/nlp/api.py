"""Annotate any text with the pipeline's NER, rule layer, assertion and sections, configured from the settings.

    from pipeline.nlp import annotate
    rows = annotate(["Pt denies f/c/n/v. Home meds: Toprol, Lasix."])
    rows[0][0]  # {'start_char': 10, 'end_char': 11, 'text': 'f', 'label': 'PROBLEM', 'is_negated': True, ...}

The model folder, device, precision, token budget and maximum length come from `pipeline.config.Settings`
(`EHR_NER_MODEL_PATH`, `EHR_DEVICE`, `EHR_NER_PRECISION`, ...), the same the nightly NER task uses, so nobody copies
the task's arguments. The loaded model and medspaCy pipeline are kept for the next call with the same settings.
`ehr-pipeline annotate PATH|-` is the command-line face of this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pipeline.config import Settings, load_settings
from pipeline.nlp.assertion import FLAGS

ENTITY_FIELDS = ("doc", "start_char", "end_char", "text", "label", "score", *FLAGS, "section")
ANNOTATION_SCHEMA = pa.schema([
    pa.field("doc", pa.string(), nullable=False),
    pa.field("start_char", pa.int64(), nullable=False),
    pa.field("end_char", pa.int64(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    *(pa.field(flag, pa.bool_(), nullable=False) for flag in FLAGS),
    pa.field("section", pa.string()),
])

_CACHE: dict[tuple, tuple[Any, Any]] = {}


def _components(settings: Settings):
    """(NerModel, AssertionAnnotator) for these settings, loaded once per process."""
    from pipeline.nlp.assertion import AssertionAnnotator
    from pipeline.nlp.ner import NerModel

    key = (str(settings.ner_model_dir), settings.device, settings.ner_precision, settings.ner_max_length,
           settings.ner_token_budget, settings.ner_fused_cpu)
    if key not in _CACHE:
        model = NerModel.load(settings.ner_model_dir, device=settings.device, max_length=settings.ner_max_length,
                              token_budget=settings.ner_token_budget, precision=settings.ner_precision,
                              fused_cpu=settings.ner_fused_cpu)
        _CACHE[key] = (model, AssertionAnnotator.create())
    return _CACHE[key]


def annotate(texts: Sequence[str | None] | str, settings: Settings | None = None) -> list[list[dict[str, Any]]]:
    """Entities per text: char offsets (end exclusive), text, label, score, the five assertion flags, section.

    `texts`: a list of strings (None or "" gives no entities) or one string (then a list of one). `settings`:
    default `load_settings()` (environment and .env).
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if any(t is not None and not isinstance(t, str) for t in texts):
        raise TypeError("annotate() takes strings (or None); decode bytes first")
    settings = settings or load_settings()
    model, annotator = _components(settings)
    out: list[list[dict[str, Any]]] = []
    for text, found in zip(texts, model.predict(texts) if texts else [], strict=True):
        if not text or len(found) == 0:
            out.append([])
            continue
        assertions = annotator.annotate(text, found.starts, found.ends, found.labels, found.sentence_chars)
        rows = []
        for k, (s, e, label, score) in enumerate(zip(found.starts.tolist(), found.ends.tolist(), found.labels,
                                                     found.scores.tolist(), strict=True)):
            row = {"start_char": s, "end_char": e, "text": text[s:e], "label": label, "score": round(score, 4)}
            row.update({flag: bool(assertions.flags[k, j]) for j, flag in enumerate(FLAGS)})
            row["section"] = assertions.sections[k]
            rows.append(row)
        out.append(rows)
    return out


def annotations_table(doc_ids: Sequence[str], entities: Sequence[Sequence[dict[str, Any]]]) -> pa.Table:
    """One row per entity with its document's id (ANNOTATION_SCHEMA)."""
    rows = [{"doc": doc, **ent} for doc, ents in zip(doc_ids, entities, strict=True) for ent in ents]
    return pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA)
