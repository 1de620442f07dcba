"""PHI gate for note text: the PHI tagger (a model, when the caller gives one) plus deterministic recognizers.

Rules come from phi_rules.json: placeholders of de-identification tools (blanked first, same length, never
flagged), MIMIC's shifted years (not identifiers), Presidio's pattern recognizers and our own patterns for
structured identifiers. The tagger is a callable the task passes in (``ValidationConfig.phi_tagger``, built by
``pipeline.nlp.phi``); this stage does not import the NLP stage.

Runs offline: no spaCy model is loaded (recognizers are called directly, not through an
AnalyzerEngine), and the e-mail recognizer checks domains against tldextract's bundled suffix list
instead of fetching it. Findings are reported as types, counts, offsets and scores; the text never leaves here.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

PHI_RULES_FILE = "phi_rules.json"


@dataclass(frozen=True)
class _Recognizer:
    entity: str
    min_score: float
    recognizer: Any  # presidio_analyzer.EntityRecognizer
    prefilter: str | None = None  # RE2 regex; the recognizer only runs on texts matching it


@dataclass(frozen=True, slots=True)
class PhiFinding:
    """One identifier found: char offsets into the original text (end exclusive), type, score, who found it."""

    start: int
    end: int
    entity: str
    score: float
    source: str  # "tagger" or "rules"


# A tagger: placeholder-blanked texts in, per text (start, end, entity type, score) out (pipeline.nlp.phi).
PhiTaggerFn = Callable[[list[str | None]], list[list[tuple[int, int, str, float]]]]
MAX_OFFSETS_SHOWN = 10


class PhiScanner:
    """Finds PHI in note texts: the PHI tagger (when given) plus the deterministic recognizers."""

    def __init__(self, rules: dict[str, Any], base_dir: Path | None = None) -> None:
        self.placeholders = [re.compile(p) for p in rules.get("placeholders", [])]
        self.placeholder_re = re.compile("|".join(f"(?:{p})" for p in rules.get("placeholders", []))) \
            if rules.get("placeholders") else None
        self.shifted_years = re.compile(rules["shifted_years"]) if rules.get("shifted_years") else None
        self.not_identifiers = {w.lower() for w in rules.get("not_identifiers", [])}
        moved = [key for key in ("date_must_match", "phone_must_match") if key in rules]
        if moved:
            raise PhiRulesError(f"{PHI_RULES_FILE}: {', '.join(moved)} moved into \"must_match\" "
                                '({"DATE": ..., "PHONE": ...})')
        self.must_match = {entity: re.compile(p) for entity, p in rules.get("must_match", {}).items()}
        self.not_identifier_patterns = [re.compile(p) for p in rules.get("not_identifier_patterns", [])]
        self.eponym_after = re.compile(rules["eponym_followers"]) if rules.get("eponym_followers") else None
        self.clinical_words = _clinical_words(tuple(rules.get("clinical_vocabularies", [])), base_dir)
        self.recognizers = _build_recognizers(rules)

    def clinical_term(self, text: str, start: int, end: int) -> bool:
        """Whether the tagger's NAME/LOCATION span is a clinical word: an eponym (a name directly followed by
        "sign", "disease", "catheter" ...) or only words of the clinical vocabularies (drugs, brands, procedures)
        that are not also common names."""
        if self.eponym_after is not None and self.eponym_after.match(text, end):
            return True
        words = [w.lower().removesuffix("'s") for w in _WORD.findall(text[start:end])]
        return bool(words) and all(w in self.clinical_words for w in words)

    def blank(self, text: str) -> str:
        """The text with every placeholder replaced by as many spaces (offsets unchanged)."""
        if self.placeholder_re is None:
            return text
        return self.placeholder_re.sub(lambda m: " " * len(m.group(0)), text)

    def entities(self, text: str, candidates: list[bool] | None = None) -> list[str]:
        """Sorted entity types the deterministic recognizers find in one (placeholder-blanked) text."""
        return sorted({f.entity for f in self._rule_findings(text, candidates)})

    def _rule_findings(self, text: str, candidates: list[bool] | None = None) -> list[PhiFinding]:
        found = []
        for index, item in enumerate(self.recognizers):
            if candidates is not None and not candidates[index]:
                continue
            for result in item.recognizer.analyze(text, entities=[item.entity]):
                if result.score >= item.min_score:
                    found.append(PhiFinding(result.start, result.end, item.entity, float(result.score), "rules"))
        return found

    def findings(
        self, texts: pa.Array | pa.ChunkedArray, skip: pa.Array | None = None, tagger: PhiTaggerFn | None = None,
    ) -> list[list[PhiFinding] | None]:
        """Per text: the findings sorted by offset (None for a null or skipped text). Never returns text."""
        values = texts.to_pylist()
        skipped = skip.to_pylist() if skip is not None else [False] * len(values)
        blanked = [None if t is None or s else self.blank(t) for t, s in zip(values, skipped, strict=True)]
        blanked_array = pa.array(blanked, pa.string())
        prefilters = [
            pc.fill_null(pc.match_substring_regex(blanked_array, item.prefilter), False).to_pylist()
            if item.prefilter else [True] * len(blanked)
            for item in self.recognizers
        ]
        tagged: list[list[tuple[int, int, str, float]]] = [[] for _ in blanked]
        if tagger is not None:
            rows = [i for i, t in enumerate(blanked) if t and t.strip()]
            for i, found in zip(rows, tagger([blanked[i] for i in rows]), strict=True):
                tagged[i] = found
        out: list[list[PhiFinding] | None] = []
        # Presidio's API is per text, so this is the one per-row loop of the stage (notes only).
        for row, text in enumerate(blanked):
            if text is None:
                out.append(None)
                continue
            found = self._rule_findings(text, [prefilter[row] for prefilter in prefilters])
            clinical = [m.span() for p in self.not_identifier_patterns for m in p.finditer(text)] if tagged[row] else []
            for start, end, entity, score in tagged[row]:
                if any(a <= start and end <= b for a, b in clinical):
                    continue  # inside a clinical number (a blood gas 7.35/45/80)
                if entity == "DATE" and self.shifted_years is not None and self.shifted_years.search(text[start:end]):
                    continue  # a MIMIC shifted date: a date of the record, not an identifier
                value = text[start:end]
                if not any(ch.isalnum() for ch in value):
                    continue  # punctuation alone identifies nothing
                if entity in ("NAME", "LOCATION") and value.strip(" .,;:").lower() in self.not_identifiers:
                    continue  # a hospital unit, service or role (MICU, GI, PT ...)
                if entity in ("NAME", "LOCATION") and self.clinical_term(text, start, end):
                    continue  # a drug, procedure or eponym (Lasix, Murphy's sign)
                if entity in self.must_match and not self.must_match[entity].search(value):
                    continue  # a DATE without a day, month or year ("today"), a PHONE of 2 digits, a NAME "1400"
                found.append(PhiFinding(start, end, entity, score, "tagger"))
            out.append(sorted(found, key=lambda f: (f.start, f.end, f.entity)))
        return out

    def scan(
        self, texts: pa.Array | pa.ChunkedArray, skip: pa.Array | None = None, tagger: PhiTaggerFn | None = None,
    ) -> pa.Array:
        """Per text: the evidence (types, counts, offsets, scores; never text), or null when none found.

        Evidence: ``TYPE xN [start-end score, ...]`` per type, types sorted, ``; ``-separated, e.g.
        ``NAME x2 [4-9 0.97, 30-41 0.88]; US_SSN x1 [50-61 0.50]`` (at most 10 offsets shown per type).
        """
        return pa.array([evidence(found) for found in self.findings(texts, skip, tagger)], type=pa.string())


def evidence(found: list[PhiFinding] | None) -> str | None:
    """The quarantine evidence of one text's findings: types, counts, offsets, scores; no text."""
    if not found:
        return None
    by_type: dict[str, list[PhiFinding]] = {}
    for f in found:
        by_type.setdefault(f.entity, []).append(f)
    parts = []
    for entity in sorted(by_type):
        items = by_type[entity]
        shown = ", ".join(f"{f.start}-{f.end} {f.score:.2f}" for f in items[:MAX_OFFSETS_SHOWN])
        more = f", +{len(items) - MAX_OFFSETS_SHOWN} more" if len(items) > MAX_OFFSETS_SHOWN else ""
        parts.append(f"{entity} x{len(items)} [{shown}{more}]")
    return "; ".join(parts)


def _build_recognizers(rules: dict[str, Any]) -> list[_Recognizer]:
    from presidio_analyzer import Pattern, PatternRecognizer, predefined_recognizers

    built = []
    for spec in rules.get("recognizers", []):
        cls = _offline_email_recognizer() if spec["class"] == "EmailRecognizer" else getattr(
            predefined_recognizers, spec["class"]
        )
        options = dict(spec.get("options", {}))
        if "supported_regions" in options:
            options["supported_regions"] = tuple(options["supported_regions"])
        built.append(
            _Recognizer(spec["entity"], float(spec["min_score"]), cls(**options), spec.get("prefilter"))
        )
    by_entity: dict[tuple[str, bool], list[Any]] = {}
    for spec in rules.get("patterns", []):
        key = (spec["entity"], bool(spec.get("ignore_case", False)))
        by_entity.setdefault(key, []).append(Pattern(spec["name"], spec["regex"], float(spec["score"])))
    for (entity, ignore_case), patterns in by_entity.items():
        flags = re.DOTALL | re.MULTILINE | (re.IGNORECASE if ignore_case else 0)
        recognizer = PatternRecognizer(
            supported_entity=entity, patterns=patterns, global_regex_flags=flags,
            name=f"ehr_{entity.lower()}_{'i' if ignore_case else 'c'}",
        )
        built.append(_Recognizer(entity, min(p.score for p in patterns), recognizer))
    return built


@cache
def _offline_email_recognizer() -> type:
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extract = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail recognizer with the bundled public-suffix snapshot (no network)."""

        def validate_result(self, pattern_text: str) -> bool:
            return extract(pattern_text).fqdn != ""

    return OfflineEmailRecognizer


_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


class PhiRulesError(ValueError):
    """phi_rules.json names something that is not there."""


@cache
def _common_names() -> frozenset[str]:
    from faker.providers.person.en_US import Provider

    return frozenset(n.lower() for n in (*Provider.first_names, *Provider.last_names))


@cache
def _clinical_words(files: tuple[str, ...], base_dir: Path | None) -> frozenset[str]:
    """Words of the clinical vocabularies (paths relative to the rules file), without the common first and last
    names (a word that is both, like Allegra, stays a possible name)."""
    words: set[str] = set()
    for name in files:
        path = (Path(base_dir) if base_dir else Path.cwd()) / name
        if not path.is_file():
            raise PhiRulesError(f"{PHI_RULES_FILE}: clinical vocabulary {name} not found (looked at {path})")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                words.update(w.lower() for w in _WORD.findall(line))
    return frozenset(words - _common_names()) if words else frozenset()


@cache
def _scanner(path: Path, mtime_ns: int) -> PhiScanner:
    return PhiScanner(json.loads(path.read_text()), base_dir=path.parent)


def load_phi_scanner(suites_dir: Path) -> PhiScanner:
    path = (Path(suites_dir) / PHI_RULES_FILE).resolve()
    return _scanner(path, path.stat().st_mtime_ns)
