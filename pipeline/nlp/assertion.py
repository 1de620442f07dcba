"""Assertion (ConText) and sections (medspaCy sectionizer) for the model's entities, one spaCy doc per note.

The note is tokenised and sentence-split once (medspaCy tokenizer + PyRuSH); the model's spans become
`doc.ents` (token-aligned by expanding to whole tokens; the model's exact char offsets are kept for output);
ConText sets the five flags; the sectionizer names each entity's section and marks entities in Past Medical
History as historical and in Family History as family. Extra rules and section titles are data files under
schemas/nlp/.
"""

from __future__ import annotations

import bisect
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import SCHEMAS_DIR

log = logging.getLogger(__name__)

FLAGS: tuple[str, ...] = ("is_negated", "is_uncertain", "is_historical", "is_family", "is_hypothetical")
RULES_DIR = SCHEMAS_DIR / "nlp"
CONTEXT_RULES_FILE = "context_rules.json"
SECTION_RULES_FILE = "section_rules.json"
SECTION_ATTRS_FILE = "section_attributes.json"
# PyRuSH sentence length cap (chars): keeps sentence splitting linear on notes without punctuation.
MAX_SENTENCE_CHARS = 2000


@dataclass
class Assertions:
    """Per-entity flags (n × 5, in FLAGS order) and section category (None outside any titled section)."""

    flags: np.ndarray
    sections: list[str | None]


def silence_pyrush() -> None:
    """PyRuSH logs through loguru (a DEBUG line per token in some versions): switch it off for our process."""
    from loguru import logger  # PyRuSH's own logger: installed with it, imported by it

    logger.disable("PyRuSH")
    logging.getLogger("PyRuSH").setLevel(logging.WARNING)


def load_context_rules(path: Path) -> list:
    from medspacy.context import ConTextRule

    data = json.loads(Path(path).read_text())
    return [ConTextRule.from_dict(rule) for rule in data["context_rules"]]


def dropped_default_rules(path: Path) -> set[tuple[str, str]]:
    """(literal, direction) of medspaCy default rules our rules file replaces (`drop_default_rules`)."""
    data = json.loads(Path(path).read_text())
    return {(d["literal"].lower(), d["direction"].upper()) for d in data.get("drop_default_rules", [])}


def default_context_rules() -> list:
    """The ConText rules medspaCy ships (its resources/en/context_rules.json)."""
    import medspacy
    from medspacy.context import ConTextRule

    path = Path(medspacy.__file__).resolve().parents[1] / "resources" / "en" / "context_rules.json"
    return ConTextRule.from_json(str(path))


_SPACE = {"IS_SPACE": True, "OP": "*"}


def whitespace_tolerant(rule, tokenizer):
    """The same rule as a token pattern that lets runs of spaces and line breaks sit between its words.

    Hard-wrapped and column-aligned notes write "negative   for" or "negative\nfor"; spaCy keeps such runs as
    whitespace tokens, which a phrase literal does not skip. One-token cues and regex patterns stay as they are.
    """
    from medspacy.context import ConTextRule

    pattern = rule.pattern
    if pattern is None:
        words = [t.lower_ for t in tokenizer(rule.literal) if not t.is_space]
        if len(words) < 2:
            return rule
        pattern = [{"LOWER": w} for w in words]
    elif not isinstance(pattern, list) or len(pattern) < 2:
        return rule
    spaced = []
    for k, token in enumerate(pattern):
        if k:
            spaced.append(dict(_SPACE))
        spaced.append(token)
    data = rule.to_dict()
    data["pattern"] = spaced
    return ConTextRule.from_dict(data)


def load_section_rules(path: Path) -> list:
    from medspacy.section_detection import SectionRule

    data = json.loads(Path(path).read_text())
    return [SectionRule.from_dict(rule) for rule in data["section_rules"]]


def load_section_attributes(path: Path) -> dict[str, dict[str, bool]]:
    return json.loads(Path(path).read_text())["section_attributes"]


def _set_sentence_starts(doc, sentence_chars: Sequence[int] | np.ndarray) -> None:
    """Mark sentence starts on the doc's tokens from char offsets (each maps to the first token at or after it)."""
    from spacy.attrs import SENT_START

    n = len(doc)
    if n == 0:
        return
    token_chars = np.fromiter((token.idx for token in doc), dtype=np.int64, count=n)
    first = np.searchsorted(token_chars, np.asarray(sentence_chars, dtype=np.int64), side="left")
    values = np.full(n, -1, dtype=np.int32)
    values[first[first < n]] = 1
    values[0] = 1
    doc.from_array([SENT_START], values.reshape(-1, 1).astype(np.uint64))


class AssertionAnnotator:
    """medspaCy components built once per task; `annotate` runs them once per note."""

    def __init__(self, nlp, section_attributes: dict[str, dict[str, bool]]) -> None:
        self.nlp = nlp
        self.sentencizer = nlp.get_pipe("medspacy_pyrush")
        self.context = nlp.get_pipe("medspacy_context")
        self.sectionizer = nlp.get_pipe("medspacy_sectionizer")
        self.section_attributes = section_attributes

    @classmethod
    def create(cls, rules_dir: Path | None = RULES_DIR, default_rules: bool = True) -> AssertionAnnotator:
        """medspaCy tokenizer, PyRuSH, ConText and sectionizer with medspaCy's rules plus ours from `rules_dir`."""
        import medspacy

        silence_pyrush()
        # spaCy warns on every call of a medspaCy matcher that has only phrase patterns: noise, not a problem.
        warnings.filterwarnings("ignore", message=r".*\[W036\]")
        nlp = medspacy.load(
            medspacy_enable=["medspacy_tokenizer", "medspacy_pyrush"], load_rules=default_rules
        )
        nlp.get_pipe("medspacy_pyrush").max_sentence_length = MAX_SENTENCE_CHARS
        section_attributes: dict[str, dict[str, bool]] = {}
        if rules_dir is not None and (Path(rules_dir) / SECTION_ATTRS_FILE).exists():
            section_attributes = load_section_attributes(Path(rules_dir) / SECTION_ATTRS_FILE)
        nlp.add_pipe("medspacy_context", config={"rules": None})
        nlp.add_pipe(
            "medspacy_sectionizer",
            config={
                # Our titles replace medspaCy's: one category name per title, the names the warehouse stores.
                "rules": None if rules_dir is not None else "default",
                "span_attrs": section_attributes or None,
                # A header is its own sentence, so "History" in "Family History:" modifies nothing.
                "apply_sentence_boundary": True,
            },
        )
        context_rules = default_context_rules() if default_rules else []
        if rules_dir is not None:
            rules_dir = Path(rules_dir)
            if (rules_dir / CONTEXT_RULES_FILE).exists():
                # our file may replace default rules (e.g. medspaCy's backward ": no", which wins over "no" in
                # "Skin: no rashes, lesions")
                dropped = dropped_default_rules(rules_dir / CONTEXT_RULES_FILE)
                context_rules = [r for r in context_rules if (r.literal.lower(), r.direction.upper()) not in dropped]
                context_rules += load_context_rules(rules_dir / CONTEXT_RULES_FILE)
        if context_rules:
            nlp.get_pipe("medspacy_context").add([whitespace_tolerant(r, nlp.tokenizer) for r in context_rules])
        if rules_dir is not None and (Path(rules_dir) / SECTION_RULES_FILE).exists():
            nlp.get_pipe("medspacy_sectionizer").add(load_section_rules(Path(rules_dir) / SECTION_RULES_FILE))
        return cls(nlp, section_attributes)

    def annotate(
        self,
        text: str,
        starts: Sequence[int],
        ends: Sequence[int],
        labels: Sequence[str],
        sentence_chars: Sequence[int] | np.ndarray | None = None,
    ) -> Assertions:
        """Flags and sections for entities at [starts[i], ends[i]) of `text` (sorted by start, not overlapping).

        `sentence_chars`: char offsets where sentences start, as already found when the note was windowed; the
        doc then takes them instead of being split again. Without them, PyRuSH splits the note.
        """
        n = len(labels)
        flags = np.zeros((n, len(FLAGS)), dtype=bool)
        if n == 0 or not text:
            return Assertions(flags, [None] * n)
        doc = self.nlp.make_doc(text)
        if sentence_chars is None:
            doc = self.sentencizer(doc)
        else:
            _set_sentence_starts(doc, sentence_chars)
        ents = []
        ent_of = np.full(n, -1, dtype=np.int64)
        last_token_end = 0
        for i in range(n):
            span = doc.char_span(int(starts[i]), int(ends[i]), label=labels[i], alignment_mode="expand")
            if span is None or len(span) == 0:
                continue
            if span.start < last_token_end:
                # Two model entities inside one spaCy token (e.g. "HTN/DM"): share the earlier one's flags.
                ent_of[i] = len(ents) - 1
                continue
            ent_of[i] = len(ents)
            ents.append(span)
            last_token_end = span.end
        doc.ents = ents
        # Sections first: they close sentences at headers, which bounds ConText's scopes.
        doc = self.sectionizer(doc)
        self._apply_context(doc)
        ent_flags = np.array([[getattr(ent._, f) for f in FLAGS] for ent in doc.ents], dtype=bool).reshape(-1, 5)
        placed = ent_of >= 0
        flags[placed] = ent_flags[ent_of[placed]]
        sections = self._sections_at(doc, starts)
        # Entities spaCy could not place still get their section's flags.
        for i in np.flatnonzero(~placed):
            for attr, value in self.section_attributes.get(sections[i] or "", {}).items():
                flags[i, FLAGS.index(attr)] = value
        return Assertions(flags, sections)

    def _apply_context(self, doc) -> None:
        """ConText, one sentence at a time.

        A modifier's scope never leaves its sentence, so grouping modifiers and targets by sentence gives the
        same edges as medspaCy's whole-doc graph, in linear rather than quadratic time on long notes, and builds
        modifiers only for sentences that hold an entity.
        """
        from medspacy.context import ConTextModifier
        from medspacy.context.context_graph import ConTextGraph

        context = self.context
        matcher = getattr(context, "_ConText__matcher", None)
        if matcher is None:  # pragma: no cover - a medspaCy without the private matcher: use the plain call
            context(doc)
            return
        sent_starts = np.array([sent.start for sent in doc.sents], dtype=np.int64)
        targets_by_sent: dict[int, list] = {}
        for ent in doc.ents:
            k = int(np.searchsorted(sent_starts, ent.start, side="right")) - 1
            targets_by_sent.setdefault(k, []).append(ent)
        modifiers_by_sent: dict[int, list] = {}
        for match_id, start, end in matcher(doc):
            k = int(np.searchsorted(sent_starts, start, side="right")) - 1
            if k in targets_by_sent:
                rule = matcher.rule_map[self.nlp.vocab[match_id].text]
                modifiers_by_sent.setdefault(k, []).append(
                    ConTextModifier(rule, start, end, doc, max_scope=context.max_scope)
                )
        for k, modifiers in modifiers_by_sent.items():
            graph = ConTextGraph(prune_on_modifier_overlap=context.prune_on_target_overlap)
            graph.targets = targets_by_sent[k]
            graph.modifiers = modifiers
            graph.update_scopes()
            graph.apply_modifiers()
            if context.context_attributes_mapping:
                context.set_context_attributes(graph.edges)

    @staticmethod
    def _sections_at(doc, starts: Sequence[int]) -> list[str | None]:
        section_starts, categories = [], []
        for section in doc._.sections:
            section_starts.append(doc[section.section_span[0] : section.section_span[1]].start_char
                                  if section.section_span[1] > section.section_span[0] else 0)
            categories.append(section.category)
        result: list[str | None] = []
        for start in starts:
            k = bisect.bisect_right(section_starts, int(start)) - 1
            result.append(categories[k] if k >= 0 else None)
        return result
