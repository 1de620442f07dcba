"""The rule layer after the NER model: drop what is never a concept, fix labels from real vocabularies, add what a
lexicon knows for sure.

The model reads context; rules know words. Per note, over the model's spans (`NoteEntities`):

1. **Trim**: dose, route and frequency words at a span's end ("vancomycin 125mg QID" → "vancomycin") and
   punctuation at either end.
2. **Drop** spans that are never a concept on their own: no letters (a lone quote mark, "100mg"), only stop words,
   demographics ("58 yo white male"), hard negatives (foods, places, household objects, people and roles, body
   parts, generic clinical words), section headers ("HPI", "Pulm", "Abd:"), and pieces of shorthand that is not a
   concept ("f" and "u" of "f/u", "s/p").
3. **Relabel** from vocabularies: a drug name (MIMIC-IV demo prescriptions, brand names) is TREATMENT, a surgical
   procedure word (-ectomy, -plasty, ...; ICD procedure titles) TREATMENT, a diagnostic one (-scopy, -graphy) or a
   lab name TEST, as the i2b2 2010 guidelines (schemas/nlp/annotation_guidelines.md) define them.
4. **Add** what the model missed and the vocabularies are sure of: drug and brand names, surgical procedure words,
   and symptom shorthand in slash lists ("denies f/c/n/v", "no m/r/g": one PROBLEM per item).

Everything the rules know is data: schemas/nlp/ner_rules.json and schemas/nlp/vocab/ (built by
tools/build_nlp_vocab.py from the MIMIC-IV demo dictionaries; ODbL).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import SCHEMAS_DIR

RULES_FILE = SCHEMAS_DIR / "nlp" / "ner_rules.json"
VOCAB_DIR = SCHEMAS_DIR / "nlp" / "vocab"
ADDED_SCORE = 0.5  # score of a span the rules add (the model's scores are mean token probabilities)

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'&+-]*")
_SLASH_LIST = re.compile(r"(?<![A-Za-z/])[A-Za-z]{1,5}(?:/[A-Za-z]{1,5})+(?![A-Za-z/])")
_SHORTHAND_TOKEN = re.compile(r"(?<![A-Za-z/&])[A-Za-z]{1,3}(?:/[A-Za-z]{1,3})+(?![A-Za-z/])|(?<![A-Za-z])[A-Za-z]/")
_NUMBER = re.compile(r"^[\d.,/:-]+(?:mg|g|mcg|ml|%|x)?$", re.IGNORECASE)


def _read_words(path: Path) -> frozenset[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return frozenset(ln.strip().lower() for ln in lines if ln.strip() and not ln.startswith("#"))


def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


@dataclass(frozen=True)
class Entities:
    """Plain spans the layer works on (sorted by start, not overlapping)."""

    starts: list[int]
    ends: list[int]
    labels: list[str]
    scores: list[float]


class RuleLayer:
    """Vocabularies and rules loaded once; `refine(text, starts, ends, labels, scores)` runs per note."""

    def __init__(self, rules: dict, drugs: frozenset[str], procedures: frozenset[str], labs: frozenset[str]) -> None:
        negatives = rules["hard_negatives"]
        self.stop = _stop_words()
        self.never = frozenset(
            w.lower() for w in [*rules["demographics"], *(w for group in negatives.values() for w in group)]
        ) | self.stop
        self.headers = frozenset(h.lower() for h in rules["headers"])
        self.non_concepts = frozenset(a.lower() for a in rules["non_concept_abbreviations"])
        self.shorthand = {k.lower(): v for k, v in rules["slash_shorthand"].items()}
        self.dose_words = frozenset(w.lower() for w in rules["dose_words"])
        self.therapeutic = re.compile(rf"[a-z]{{3,}}(?:{'|'.join(rules['therapeutic_suffixes'])})$")
        self.diagnostic = re.compile(rf"[a-z]{{3,}}(?:{'|'.join(rules['diagnostic_suffixes'])})$")
        self.drug_min_chars = int(rules.get("drug_min_chars", 5))
        self.treatment_heads = frozenset(w.lower() for w in rules.get("treatment_heads", []))
        self.test_heads = frozenset(w.lower() for w in rules.get("test_heads", []))
        self.drugs = frozenset(d for d in drugs if d not in self.never)
        self.procedures = procedures
        self.labs = frozenset(lab for lab in labs if lab not in self.never and len(lab) >= 3)
        # whole-word, case-insensitive finder for the names the layer may add (longest first)
        addable = sorted(
            (d for d in self.drugs if len(d) >= self.drug_min_chars and " " not in d and d not in self.labs),
            key=len, reverse=True,
        )
        self._drug_finder = re.compile(rf"\b(?:{'|'.join(map(re.escape, addable))})\b", re.IGNORECASE) if addable \
            else None
        self._procedure_finder = re.compile(
            rf"\b[a-z]{{3,}}(?:{'|'.join(rules['therapeutic_suffixes'])})\b", re.IGNORECASE)

    @classmethod
    def load(cls, rules_file: Path = RULES_FILE, vocab_dir: Path = VOCAB_DIR) -> RuleLayer:
        rules = json.loads(Path(rules_file).read_text())
        vocab_dir = Path(vocab_dir)
        drugs = _read_words(vocab_dir / "drugs.txt") | _read_words(vocab_dir / "brands.txt")
        return cls(rules, drugs, _read_words(vocab_dir / "procedures.txt"), _read_words(vocab_dir / "labs.txt"))

    # -- single decisions --------------------------------------------------------------------------------------------

    def words(self, span: str) -> list[str]:
        return [w.lower() for w in _WORD.findall(span)]

    def is_never(self, text: str, start: int, end: int) -> bool:
        """True for a span that is not a concept on its own (see the module doc, step 2)."""
        span = text[start:end]
        if not re.search(r"[A-Za-z]", span):
            return True
        raw_words = _WORD.findall(span)
        # an all-caps abbreviation is not the stop word it spells ("AS" aortic stenosis, "IT", "US")
        if not raw_words or all((w.lower() in self.never and not (len(w) > 1 and w.isupper() and
                                                                  w.lower() in self.stop)) or _NUMBER.match(w)
                                for w in raw_words):
            return True
        if span.strip().lower() in self.headers and self.is_header_position(text, start, end):
            return True
        return self.in_non_concept_shorthand(text, start, end)

    @staticmethod
    def is_header_position(text: str, start: int, end: int) -> bool:
        """Followed by a colon, where a section title sits (a word alone on its line may be a diagnosis list item)."""
        return text[end : end + 3].lstrip(" \t").startswith(":")

    def in_non_concept_shorthand(self, text: str, start: int, end: int) -> bool:
        """The span lies inside shorthand such as f/u, s/p, h/o (not a concept, whatever the model says)."""
        lo = start
        while lo > 0 and (text[lo - 1].isalpha() or text[lo - 1] in "/&'"):
            lo -= 1
        hi = end
        while hi < len(text) and (text[hi].isalpha() or text[hi] in "/&'"):
            hi += 1
        token = text[lo:hi].lower()
        return "/" in token and token.strip("/") in {a.strip("/") for a in self.non_concepts} | self.non_concepts

    def label_for(self, span: str, label: str) -> str:
        """The label the vocabularies give a span, else the model's."""
        words = self.words(span)
        if not words:
            return label
        lowered = " ".join(words)
        if lowered in self.labs and lowered in self.drugs:
            return label  # "albumin", "glucose": a lab or a drug, as the context says
        if lowered in self.drugs or (words[0] in self.drugs and all(
                w in self.drugs or w in self.dose_words or _NUMBER.match(w) for w in words[1:])):
            return "TREATMENT"
        if any(w in self.procedures or self.therapeutic.match(w) for w in words):
            return "TREATMENT"
        if any(self.diagnostic.match(w) for w in words) or lowered in self.labs:
            return "TEST"
        # the head noun of a procedure phrase ("breast reduction", "saphenous vein ligation", "skin biopsy")
        if words[-1] in self.test_heads or lowered in self.test_heads:
            return "TEST"
        if words[-1] in self.treatment_heads or lowered in self.treatment_heads:
            return "TREATMENT"
        return label

    def trim(self, text: str, start: int, end: int) -> tuple[int, int]:
        """Dose/route/frequency words and punctuation off the span's end, punctuation off its start."""
        while start < end and not text[start].isalnum():
            start += 1
        while end > start:
            while end > start and not text[end - 1].isalnum() and text[end - 1] != "%" and not (
                    text[end - 1] == ")" and "(" in text[start:end]):
                end -= 1
            match = re.search(r"[A-Za-z0-9.%/]+$", text[start:end])
            if match is None or match.start() == 0:
                break
            last = match.group(0).lower()
            if last in self.dose_words or _NUMBER.match(last) or re.fullmatch(r"\d[\d.]*(mg|g|mcg|ml|%)", last):
                end = start + match.start()
                continue
            break
        while end > start and text[end - 1] in " \t\r\n,;:-(":
            end -= 1
        return start, end

    # -- the note ----------------------------------------------------------------------------------------------------

    def refine(self, text: str, starts, ends, labels, scores) -> Entities:
        kept: list[tuple[int, int, str, float]] = []
        for s, e, label, score in zip(starts, ends, labels, scores, strict=True):
            s, e = self.trim(text, int(s), int(e))
            if e <= s or self.is_never(text, s, e):
                continue
            kept.append((s, e, self.label_for(text[s:e], label), float(score)))
        added = self._slash_lists(text) + self._lexicon_matches(text)
        # a slash list replaces whatever the model made of it; other additions only fill gaps
        spans = _remove_overlapping(kept, [a for a in added if a[4]]) + [a[:4] for a in added if a[4]]
        spans = _fill_gaps(spans, [a[:4] for a in added if not a[4]])
        spans.sort()
        return Entities([s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans],
                        [s[3] for s in spans])

    def _slash_lists(self, text: str) -> list[tuple[int, int, str, float, bool]]:
        out = []
        for match in _SLASH_LIST.finditer(text):
            parts = match.group(0).split("/")
            if len(parts) < 2 or not all(p.lower() in self.shorthand for p in parts):
                continue
            if match.group(0).lower() in self.non_concepts:
                continue
            pos = match.start()
            for part in parts:
                out.append((pos, pos + len(part), "PROBLEM", ADDED_SCORE, True))
                pos += len(part) + 1
        return out

    def _lexicon_matches(self, text: str) -> list[tuple[int, int, str, float, bool]]:
        out = []
        if self._drug_finder is not None:
            out += [(m.start(), m.end(), "TREATMENT", ADDED_SCORE, False) for m in self._drug_finder.finditer(text)]
        for m in self._procedure_finder.finditer(text):
            word = m.group(0).lower()
            if word in self.procedures or len(word) >= 9:
                out.append((m.start(), m.end(), "TREATMENT", ADDED_SCORE, False))
        return out


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _remove_overlapping(spans: list[tuple], winners: list[tuple]) -> list[tuple]:
    return [s for s in spans if not any(_overlaps(s, w) for w in winners)]


def _fill_gaps(spans: list[tuple], extra: list[tuple]) -> list[tuple]:
    out = list(spans)
    for candidate in sorted(extra):
        if not any(_overlaps(candidate, s) for s in out):
            out.append(candidate)
    return out


_LAYER: RuleLayer | None = None


def default_layer() -> RuleLayer:
    """The rule layer from schemas/nlp, loaded once per process."""
    global _LAYER
    if _LAYER is None:
        _LAYER = RuleLayer.load()
    return _LAYER


def refine_entities(text: str, found, layer: RuleLayer | None = None):
    """A `NoteEntities` after the rule layer (same type; sentence starts kept)."""
    from pipeline.nlp.ner import NoteEntities

    if text is None or not text:
        return found
    layer = layer or default_layer()
    out = layer.refine(text, found.starts.tolist(), found.ends.tolist(), list(found.labels), found.scores.tolist())
    return NoteEntities(np.asarray(out.starts, dtype=np.int64), np.asarray(out.ends, dtype=np.int64),
                        list(out.labels), np.asarray(out.scores, dtype=np.float64), found.sentence_chars)
