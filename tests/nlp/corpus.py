"""A tiny hand-made corpus shaped like pipeline.synth.notes.ComposedNote, for tests that need gold entities."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Gold:
    start_char: int
    end_char: int
    label: str
    text: str
    is_negated: bool = False
    is_uncertain: bool = False
    is_historical: bool = False
    is_family: bool = False
    is_hypothetical: bool = False
    section: str | None = None


@dataclass
class Note:
    text: str
    entities: list[Gold] = field(default_factory=list)


def make_note(text: str, marked: dict[str, tuple[str, dict]]) -> Note:
    """Entities: each key (a phrase) found in text with (label, flags)."""
    entities = []
    for phrase, (label, flags) in marked.items():
        for m in re.finditer(re.escape(phrase), text):
            entities.append(Gold(m.start(), m.end(), label, phrase, **flags))
    entities.sort(key=lambda e: e.start_char)
    return Note(text, entities)


def tiny_corpus() -> list[Note]:
    return [
        make_note(
            "Past Medical History: hypertension, diabetes.\nHPI: The patient denies chest pain. "
            "Started on metoprolol. CT scan showed possible pneumonia.",
            {
                "hypertension": ("PROBLEM", {"is_historical": True}),
                "diabetes": ("PROBLEM", {"is_historical": True}),
                "chest pain": ("PROBLEM", {"is_negated": True}),
                "metoprolol": ("TREATMENT", {}),
                "CT scan": ("TEST", {}),
                "pneumonia": ("PROBLEM", {"is_uncertain": True}),
            },
        ),
        make_note(
            "Family History: mother with breast cancer.\nDischarge Instructions: return if you develop fever.",
            {
                "breast cancer": ("PROBLEM", {"is_family": True}),
                "fever": ("PROBLEM", {"is_hypothetical": True}),
            },
        ),
    ]
