"""Decode per-token BIO / IOB2 (and IOB1-ish) label ids into entity token spans, vectorised with numpy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.nlp.errors import E003

ENTITY_TYPES: tuple[str, ...] = ("PROBLEM", "TREATMENT", "TEST")


def bio_labels(entity_types: tuple[str, ...] = ENTITY_TYPES) -> list[str]:
    """The label list used when training: O first, then B-/I- per type."""
    labels = ["O"]
    for entity_type in entity_types:
        labels += [f"B-{entity_type}", f"I-{entity_type}"]
    return labels


@dataclass(frozen=True)
class LabelScheme:
    """Label id → (entity type index or -1 for O, is-begin flag), as arrays for vectorised decoding."""

    entity_types: tuple[str, ...]
    type_of_id: np.ndarray  # int16, -1 for O
    begin_of_id: np.ndarray  # bool

    @classmethod
    def from_id2label(cls, id2label: Mapping[int | str, str]) -> LabelScheme:
        n = max(int(k) for k in id2label) + 1
        types: list[str] = []
        type_of_id = np.full(n, -1, dtype=np.int16)
        begin_of_id = np.zeros(n, dtype=bool)
        for key, label in id2label.items():
            idx = int(key)
            if label == "O":
                continue
            prefix, sep, entity_type = label.partition("-")
            if not sep or prefix not in ("B", "I") or not entity_type:
                raise ValueError(E003.format(label=label))
            if entity_type not in types:
                types.append(entity_type)
            type_of_id[idx] = types.index(entity_type)
            begin_of_id[idx] = prefix == "B"
        return cls(tuple(types), type_of_id, begin_of_id)

    def decode(self, label_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token spans from a sequence of label ids.

        Returns (starts, ends, types): token index arrays, `ends` exclusive. An entity starts at a B- tag, at an
        I- tag after O (IOB1-ish starts are tolerated) or at an I- tag whose type differs from the previous tag.

        >>> scheme = LabelScheme.from_id2label({0: "O", 1: "B-PROBLEM", 2: "I-PROBLEM", 3: "B-TEST"})
        >>> [a.tolist() for a in scheme.decode(np.array([0, 1, 2, 0, 2, 3, 1, 2]))]
        [[1, 4, 5, 6], [3, 5, 6, 8], [0, 0, 1, 0]]
        """
        label_ids = np.asarray(label_ids)
        if label_ids.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        types = self.type_of_id[label_ids]
        begins = self.begin_of_id[label_ids]
        inside = types >= 0
        prev_types = np.concatenate(([-1], types[:-1]))
        starts_mask = inside & (begins | (prev_types != types))
        starts = np.flatnonzero(starts_mask)
        # A span runs until the next token that is outside or starts a new span.
        boundary = ~inside | starts_mask
        boundary_idx = np.flatnonzero(np.concatenate((boundary[1:], [True]))) + 1
        ends = boundary_idx[np.searchsorted(boundary_idx, starts, side="right")]
        return starts, ends, types[starts].astype(np.int64)
