"""PHI gate for note text: Presidio pattern recognizers plus our own patterns, all from phi_rules.json.

Runs offline: no spaCy model is loaded (recognizers are called directly, not through an
AnalyzerEngine), and the e-mail recognizer checks domains against tldextract's bundled suffix list
instead of fetching it. Findings are reported as entity types only; the text never leaves here.
"""

from __future__ import annotations

import json
import logging
import re
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


class PhiScanner:
    """Scans note texts and names the PHI entity types found in each."""

    def __init__(self, rules: dict[str, Any]) -> None:
        self.placeholders = list(rules.get("placeholders", []))
        self.recognizers = _build_recognizers(rules)

    def entities(self, text: str, candidates: list[bool] | None = None) -> list[str]:
        """Sorted entity types found in one (placeholder-blanked) text."""
        found = set()
        for index, item in enumerate(self.recognizers):
            if candidates is not None and not candidates[index]:
                continue
            for result in item.recognizer.analyze(text, entities=[item.entity]):
                if result.score >= item.min_score:
                    found.add(item.entity)
                    break
        return sorted(found)

    def scan(self, texts: pa.Array | pa.ChunkedArray, skip: pa.Array | None = None) -> pa.Array:
        """Per text: comma-joined entity types, or null when none found (or text null/skipped)."""
        blanked = texts
        for pattern in self.placeholders:  # MIMIC placeholders (___, [** ... **]) are not PHI
            blanked = pc.replace_substring_regex(blanked, pattern=pattern, replacement=" ")
        prefilters = [
            pc.fill_null(pc.match_substring_regex(blanked, item.prefilter), False).to_pylist()
            if item.prefilter else [True] * len(blanked)
            for item in self.recognizers
        ]
        values = blanked.to_pylist()
        skipped = skip.to_pylist() if skip is not None else [False] * len(values)
        # Presidio's API is per text, so this is the one per-row loop of the stage (notes only).
        out = []
        for row, (text, skip_row) in enumerate(zip(values, skipped, strict=True)):
            if text is None or skip_row:
                out.append(None)
                continue
            found = self.entities(text, [prefilter[row] for prefilter in prefilters])
            out.append(",".join(found) or None)
        return pa.array(out, type=pa.string())


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


@cache
def _scanner(path: Path, mtime_ns: int) -> PhiScanner:
    return PhiScanner(json.loads(path.read_text()))


def load_phi_scanner(suites_dir: Path) -> PhiScanner:
    path = (Path(suites_dir) / PHI_RULES_FILE).resolve()
    return _scanner(path, path.stat().st_mtime_ns)
