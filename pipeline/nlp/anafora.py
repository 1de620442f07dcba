"""Read Anafora-annotated clinical notes (cTAKES/THYME "UMLS entities" schema) as gold notes for `evaluate_ner`.

A corpus folder holds one folder per note: the note text (a file without extension) and its annotations
(`*.xml`, Anafora's `<data><annotations><entity>...`). Entity types map to ours the way the i2b2 2010 concept task
defines them (schemas/nlp/annotation_guidelines.md): Disease_Disorder and Sign_symptom are PROBLEM,
Medications/Drugs TREATMENT, Lab TEST, and a Procedure is TEST when it is diagnostic (imaging, an exam, a scope, a
biopsy, ...; the cue words are data in schemas/nlp/annotation_mapping.json) and TREATMENT otherwise. Anatomical
sites, devices, people and medication attributes are not concepts and are skipped.

Assertion flags come from the entity's properties, which point at indicator entities: negation_indicator →
is_negated, uncertainty_indicator → is_uncertain, historyOf → is_historical, conditional → is_hypothetical, and a
subject pointing at a person whose normalisation is not the patient → is_family.

Offsets: some notes were annotated on a copy with CRLF line endings. The reader tries the text as stored and with
CRLF newlines and keeps the one where more spans start and end on word boundaries, then maps offsets back to the
stored text. A leading block of unannotated metadata lines ("Setting: ...") is cut off when the folder says so
(`skip_header`), so the model is scored on the note itself.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import SCHEMAS_DIR

MAPPING_FILE = SCHEMAS_DIR / "nlp" / "annotation_mapping.json"


class AnaforaError(ValueError):
    """A folder or XML file that is not a readable Anafora annotation."""


@dataclass(frozen=True, slots=True)
class AnnotatedEntity:
    start_char: int
    end_char: int
    label: str  # PROBLEM | TREATMENT | TEST
    text: str
    source_type: str  # the Anafora type, e.g. Sign_symptom
    is_negated: bool = False
    is_uncertain: bool = False
    is_historical: bool = False
    is_family: bool = False
    is_hypothetical: bool = False


@dataclass(slots=True)
class AnnotatedNote:
    name: str
    text: str
    entities: list[AnnotatedEntity] = field(default_factory=list)
    offset_base: str = "as stored"  # or "CRLF"
    header_chars: int = 0  # chars of metadata cut from the front of the stored text


@dataclass(frozen=True)
class Mapping:
    labels: dict[str, str]
    diagnostic: re.Pattern
    patient_subjects: frozenset[str]

    @classmethod
    def load(cls, path: Path = MAPPING_FILE) -> Mapping:
        data = json.loads(Path(path).read_text())
        words = "|".join(data["diagnostic_procedure_words"])
        suffixes = "|".join(data["diagnostic_procedure_suffixes"])
        pattern = re.compile(rf"\b(?:{words})\b|\w(?:{suffixes})\b", re.IGNORECASE)
        return cls(dict(data["labels"]), pattern, frozenset(data["patient_subjects"]))

    def label_of(self, source_type: str, text: str) -> str | None:
        label = self.labels.get(source_type)
        if label == "PROCEDURE":
            return "TEST" if self.diagnostic.search(text) else "TREATMENT"
        return label


_WORD = re.compile(r"\w")


def _fit(text: str, spans: list[tuple[int, int]]) -> int:
    """How many spans start and end on word boundaries of `text` (and lie inside it)."""
    good = 0
    for start, end in spans:
        if not 0 <= start < end <= len(text):
            continue
        starts_ok = start == 0 or not (_WORD.match(text[start - 1]) and _WORD.match(text[start]))
        ends_ok = end == len(text) or not (_WORD.match(text[end - 1]) and _WORD.match(text[end]))
        good += starts_ok and ends_ok and not text[start].isspace()
    return good


def _crlf_to_stored(text: str) -> list[int]:
    """For each offset into the CRLF copy of `text` (LF newlines), the offset into `text`."""
    back = []
    for i, ch in enumerate(text):
        if ch == "\n":
            back.append(i)  # the inserted \r
        back.append(i)
    back.append(len(text))
    return back


def _header_end(text: str, first_entity: int) -> int:
    """End of a leading metadata block: lines up to the first blank line, when no entity starts inside it."""
    match = re.search(r"\n[ \t]*\r?\n", text)
    if match is None or match.end() > first_entity:
        return 0
    block = text[: match.start()]
    # metadata reads as "Key: value." lines
    lines = [ln for ln in block.splitlines() if ln.strip()]
    keyed = sum(1 for ln in lines if re.match(r"^[A-Z][\w ()/-]{0,60}:", ln.strip()))
    return match.end() if lines and keyed >= max(1, len(lines) // 2) else 0


def _parse_spans(raw: str, where: str) -> list[tuple[int, int]]:
    spans = []
    for part in raw.split(";"):
        try:
            start, end = (int(x) for x in part.split(","))
        except ValueError as exc:
            raise AnaforaError(f"{where}: span {raw!r} is not start,end[;start,end]") from exc
        spans.append((start, end))
    return spans


def read_anafora_note(text_path: Path, xml_path: Path, *, mapping: Mapping | None = None,
                      skip_header: bool = True) -> AnnotatedNote:
    """One note and its PROBLEM/TREATMENT/TEST entities with flags (offsets into the returned `text`)."""
    mapping = mapping or Mapping.load()
    with open(text_path, encoding="utf-8", newline="") as fh:
        stored = fh.read()
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise AnaforaError(f"{xml_path}: not well-formed XML ({exc})") from exc
    annotations = root.find("annotations")
    if annotations is None:
        raise AnaforaError(f"{xml_path}: no <annotations> element")
    by_id: dict[str, ET.Element] = {}
    for ent in annotations.iter("entity"):
        by_id[(ent.findtext("id") or "").strip()] = ent
    concepts = []
    for ent_id, ent in by_id.items():
        source_type = (ent.findtext("type") or "").strip()
        if source_type not in mapping.labels:
            continue
        concepts.append((ent_id, source_type, _parse_spans(ent.findtext("span") or "", f"{xml_path} {ent_id}"), ent))
    all_spans = [s for _, _, spans, _ in concepts for s in spans]
    use_crlf = "\r" not in stored and _fit(stored.replace("\n", "\r\n"), all_spans) > _fit(stored, all_spans)
    back = _crlf_to_stored(stored) if use_crlf else None

    def to_stored(offset: int) -> int:
        if back is None:
            return offset
        return back[min(offset, len(back) - 1)]

    entities = []
    for ent_id, source_type, spans, ent in concepts:
        start, end = to_stored(min(s for s, _ in spans)), to_stored(max(e for _, e in spans))
        if not 0 <= start < end <= len(stored):
            raise AnaforaError(f"{xml_path} {ent_id}: span {spans} lies outside the note ({len(stored)} chars)")
        surface = stored[start:end]
        label = mapping.label_of(source_type, surface)
        if label is None:
            continue
        props = ent.find("properties")

        def has(prop: str, props=props) -> bool:
            return props is not None and bool((props.findtext(prop) or "").strip())

        family = False
        if props is not None and (subject_id := (props.findtext("subject") or "").strip()):
            person = by_id.get(subject_id)
            norm = ""
            if person is not None and person.find("properties") is not None:
                norm = "".join((p.text or "").strip() for p in person.find("properties")
                               if p.tag.endswith("normalization"))
            family = norm not in mapping.patient_subjects
        entities.append(AnnotatedEntity(
            start, end, label, surface, source_type,
            is_negated=has("negation_indicator"), is_uncertain=has("uncertainty_indicator"),
            is_historical=has("historyOf"), is_family=family, is_hypothetical=has("conditional"),
        ))
    entities.sort(key=lambda e: (e.start_char, e.end_char))
    cut = _header_end(stored, entities[0].start_char if entities else len(stored)) if skip_header else 0
    if cut:
        entities = [AnnotatedEntity(e.start_char - cut, e.end_char - cut, e.label, e.text, e.source_type,
                                    e.is_negated, e.is_uncertain, e.is_historical, e.is_family, e.is_hypothetical)
                    for e in entities]
    return AnnotatedNote(Path(text_path).name, stored[cut:], entities,
                         "CRLF" if use_crlf else "as stored", cut)


def read_anafora_dir(root: Path, *, skip_header: bool = True) -> list[AnnotatedNote]:
    """Every annotated note under `root` (one folder per note: the text file and one `*.xml`), by name."""
    root = Path(root)
    if not root.is_dir():
        raise AnaforaError(f"{root}: not a folder")
    mapping = Mapping.load()
    notes = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        xmls = sorted(folder.glob("*.xml"))
        text_path = folder / folder.name
        if not xmls:
            continue
        if not text_path.is_file():
            raise AnaforaError(f"{folder}: annotations without the note text {text_path.name}")
        notes.append(read_anafora_note(text_path, xmls[0], mapping=mapping, skip_header=skip_header))
    if not notes:
        raise AnaforaError(f"{root}: no annotated notes (expected <name>/<name> and <name>/*.xml)")
    return notes
