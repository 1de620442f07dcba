"""Loading of the generator's data files (pipeline/synth/data/): lexicon, templates, clinical knowledge.

Everything is parsed once and cached; the objects are read-only after loading.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).parent / "data"

TEST_FRACTION_PERCENT = 20
_SPLIT_SALT = "ehr-synth-split-v1:"
# Ids with this prefix name format tokens (section layout, MIMIC lab-line abbreviations), not sentence
# templates or lexicon terms; they belong to both splits.
STRUCTURAL_PREFIX = "struct."

FLAG_NAMES = ("neg", "unc", "hist", "fam", "hyp")


def split_of(item_id: str) -> str:
    """'train' or 'test' for a template or term id: a stable hash puts ~20% of ids in 'test'.

    >>> split_of("struct.labline:creatinine")
    'train'
    >>> split_of("cc-00000000") in ("train", "test")
    True
    """
    if item_id.startswith(STRUCTURAL_PREFIX):
        return "train"
    digest = hashlib.sha1((_SPLIT_SALT + item_id).encode()).hexdigest()
    return "test" if int(digest[:8], 16) % 100 < TEST_FRACTION_PERCENT else "train"


def in_split(item_id: str, split: str) -> bool:
    return split == "all" or split_of(item_id) == split or item_id.startswith(STRUCTURAL_PREFIX)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


@dataclass(frozen=True, slots=True)
class Term:
    term_id: str
    surface: str


@dataclass(frozen=True, slots=True)
class Concept:
    name: str
    label: str  # PROBLEM | TREATMENT | TEST
    kind: str  # problem, symptom, finding, test, labname, procedure, therapy, drug
    terms: tuple[Term, ...]


@dataclass(frozen=True, slots=True)
class Slot:
    kind: str
    flags: frozenset[str]
    is_list: bool
    group: str | None = None  # `{finding@pulm}`: only concepts of that group (data/concept_groups.csv)


@dataclass(frozen=True, slots=True)
class Template:
    template_id: str
    group: str
    text: str
    parts: tuple[str | Slot, ...]


@dataclass(frozen=True, slots=True)
class Drug:
    key: str
    drug: str
    brands: tuple[str, ...]
    row: dict[str, str] = field(hash=False, compare=False)

    @property
    def home(self) -> bool:
        return self.row["home"] == "1"


@dataclass(frozen=True, slots=True)
class LabItem:
    key: str
    itemid: int
    label: str
    fluid: str
    category: str
    loinc_code: str
    valueuom: str
    ref_lower: float
    ref_upper: float
    log_scale: bool
    center: float
    spread: float
    decimals: int
    abbr: str
    panel: str


_SLOT_RE = re.compile(r"\{([A-Za-z_]+)(?:@([a-z_]+))?(\+?)(?:\|([a-z,]+))?\}")
ENTITY_SLOTS = {
    "principal", "comorb", "symptom", "finding", "absent", "absent_finding", "absent_social", "ddx",
    "famprob", "acute", "drug", "drugname", "procedure", "therapy", "test", "labname",
}
PLAIN_SLOTS = {"age", "man", "he", "He", "his", "His", "n", "day", "___", "sx", "mr"}


def _parse_template(group: str, text: str) -> Template:
    parts: list[str | Slot] = []
    pos = 0
    for m in _SLOT_RE.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        kind, slot_group = m.group(1), m.group(2)
        if kind in PLAIN_SLOTS:
            parts.append(Slot(kind, frozenset(), False))
        elif kind in ENTITY_SLOTS:
            flags = frozenset(f for f in (m.group(4) or "").split(",") if f)
            unknown = flags - set(FLAG_NAMES)
            if unknown:
                raise ValueError(f"E-SYN001 template {text!r}: unknown flags {sorted(unknown)}")
            if slot_group is not None and slot_group not in set(concept_groups().values()):
                raise ValueError(f"E-SYN003 template {text!r}: unknown group {slot_group!r}; see concept_groups.csv")
            parts.append(Slot(kind, flags, bool(m.group(3)), slot_group))
        else:
            raise ValueError(f"E-SYN002 template {text!r}: unknown slot {kind!r}; see templates.yaml header")
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    template_id = f"{group}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return Template(template_id, group, text, tuple(parts))


@cache
def templates() -> dict[str, tuple[Template, ...]]:
    raw = yaml.safe_load((DATA_DIR / "templates.yaml").read_text())
    return {group: tuple(_parse_template(group, t) for t in items) for group, items in raw.items()}


@cache
def concept_groups() -> dict[str, str]:
    """Concept → group: the exam system of a finding (pulm, abd, …), the category of a test (imaging, lab, …)."""
    with (DATA_DIR / "concept_groups.csv").open(newline="") as fh:
        return {r["concept"]: r["group"] for r in csv.DictReader(fh)}


@cache
def drugs() -> dict[str, Drug]:
    with (DATA_DIR / "drugs.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {
        r["key"]: Drug(r["key"], r["drug"], tuple(b for b in r["brands"].split(";") if b), r) for r in rows
    }


def drug_display_name(drug: Drug) -> str:
    """The generic name as a clinician writes it in prose ('MetFORMIN (Glucophage)' -> 'metformin')."""
    name = re.sub(r"\s*\(.*?\)", "", drug.drug)
    return name.lower() if not name.isupper() else name


@cache
def lexicon() -> dict[str, Concept]:
    concepts: dict[str, Concept] = {}
    with (DATA_DIR / "lexicon.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            terms = tuple(Term(f"{r['concept']}:{slug(s)}", s) for s in r["surfaces"].split("|"))
            concepts[r["concept"]] = Concept(r["concept"], r["label"], r["kind"], terms)
    for drug in drugs().values():
        names = [drug_display_name(drug), *drug.brands]
        seen: set[str] = set()
        terms = []
        for n in names:
            if slug(n) not in seen:
                seen.add(slug(n))
                terms.append(Term(f"drug.{drug.key}:{slug(n)}", n))
        concepts[f"drug.{drug.key}"] = Concept(f"drug.{drug.key}", "TREATMENT", "drug", tuple(terms))
    return concepts


@cache
def lab_items() -> dict[str, LabItem]:
    items = {}
    with (DATA_DIR / "d_labitems.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            items[r["key"]] = LabItem(
                key=r["key"], itemid=int(r["itemid"]), label=r["label"], fluid=r["fluid"],
                category=r["category"], loinc_code=r["loinc_code"], valueuom=r["valueuom"],
                ref_lower=float(r["ref_range_lower"]), ref_upper=float(r["ref_range_upper"]),
                log_scale=r["scale"] == "log", center=float(r["center"]), spread=float(r["spread"]),
                decimals=int(r["decimals"]), abbr=r["abbr"], panel=r["panel"],
            )
    return items


@cache
def icd_dictionary() -> tuple[tuple[str, int, str], ...]:
    with (DATA_DIR / "d_icd_diagnoses.csv").open(newline="") as fh:
        return tuple((r["icd_code"], int(r["icd_version"]), r["long_title"]) for r in csv.DictReader(fh))


@cache
def clinical() -> dict[str, Any]:
    return yaml.safe_load((DATA_DIR / "clinical.yaml").read_text())


@cache
def sections() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((DATA_DIR / "sections.yaml").read_text())
