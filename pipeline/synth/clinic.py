"""Clinic and consult notes in the shorthand clinicians write, with gold PROBLEM / TREATMENT / TEST spans.

Discharge summaries from `pipeline.synth.notes` are long and tidy; clinic notes are short and terse: "58 yo M s/p
CABG x3 here for f/u", "Denies f/c/n/v", "CV: RRR, no m/r/g", "Abd: soft, NT/ND, +BS", medication lists of brand
and generic names, surgical and social history lines. This composer writes such notes, labelled the way
schemas/nlp/annotation_guidelines.md says (each item of a symptom slash list is a PROBLEM; headers, demographics,
places, foods, household objects, anatomy on its own and the pieces of f/u, s/p are not concepts and are planted as
hard negatives).

Terms come from the synthetic lexicon and drug table (with brand names) and from the vocabularies the NER rule layer
reads (schemas/nlp/vocab/: MIMIC-IV demo drug names, ICD procedure words, lab names; ODbL). Every term has a split
(`split_of`, ~20% "test"): `clinic_notes(n, split="train")` never uses a held-out term; the section layouts are
shared by both splits (held-out layouts are the discharge summaries' unseen templates).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import cache

from pipeline.config import SCHEMAS_DIR
from pipeline.synth import _data
from pipeline.synth._data import in_split
from pipeline.synth.notes import ComposedNote, GoldEntity

VOCAB_DIR = SCHEMAS_DIR / "nlp" / "vocab"
_FLAGS = ("is_negated", "is_uncertain", "is_historical", "is_family", "is_hypothetical")

SHORTHAND = {"f": "fever", "c": "chills", "n": "nausea", "v": "vomiting", "d": "diarrhea", "cp": "chest pain",
             "sob": "shortness of breath", "ha": "headache", "ns": "night sweats"}
EXAM_SHORTHAND = {"m": "murmurs", "r": "rubs", "g": "gallops"}
SOCIAL = ["tobacco use", "smoking", "EtOH use", "alcohol abuse", "illicit drug use", "IVDU", "tobacco", "EtOH",
          "marijuana use", "cocaine use"]
DEMOGRAPHICS = ["{age} yo {sex}", "{age} y/o {race} {sexw}", "{age} year old {sexw}", "{age}yo {sex}",
                "{age} y.o. {race} {sexw}"]
HARD_NEGATIVE_LINES = [
    "Lives at home with her husband and two dogs.", "Works as a teacher at the elementary school.",
    "Drinks 2 cups of coffee a day.", "She ate chocolate and drank soda before bed.", "Came in by car with his son.",
    "Sleeps on the couch most nights.", "Eats mostly rice, chicken and vegetables.", "Walks to the store daily.",
    "Retired mechanic, lives alone in an apartment.", "Accompanied by mother and grandmother today.",
    "Will follow up at the clinic in 2 weeks.", "RTC in 3 months.", "Seen with the attending and the nurse.",
]
HEADERS = {"hpi": ["HPI:", "CC/HPI:", "Subjective:", "S:"], "ros": ["ROS:", "Review of systems:", "ROS -"],
           "pmh": ["PMH:", "PMHx:", "Past Medical History:"], "psh": ["PSH:", "PSHx:", "Surgical History:"],
           "meds": ["Meds:", "Home meds:", "Medications:", "Current meds:"], "all": ["All:", "Allergies:"],
           "sh": ["SH:", "Social:", "Social History:"], "fh": ["FH:", "FHx:", "Family History:"],
           "pe": ["PE:", "Exam:", "Physical Exam:", "O:"], "ap": ["A/P:", "Assessment/Plan:", "Plan:", "A&P:"]}


@cache
def _vocab(name: str) -> tuple[str, ...]:
    path = VOCAB_DIR / f"{name}.txt"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return tuple(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#"))


@cache
def _terms() -> dict[str, tuple[tuple[str, str], ...]]:
    """(term id, surface) per kind, from the synthetic lexicon, drug table and the rule layer's vocabularies."""
    kinds: dict[str, list[tuple[str, str]]] = {"problem": [], "symptom": [], "test": [], "procedure": [],
                                               "drug": [], "brand": []}
    for concept in _data.lexicon().values():
        kind = {"problem": "problem", "finding": "problem", "symptom": "symptom", "test": "test", "labname": "test",
                "procedure": "procedure", "therapy": "procedure"}.get(concept.kind)
        if concept.kind == "drug":
            for k, term in enumerate(concept.terms):
                kinds["drug" if k == 0 else "brand"].append((term.term_id, term.surface))
        elif kind:
            kinds[kind].extend((t.term_id, t.surface) for t in concept.terms)
    for name in _vocab("drugs"):
        if len(name) >= 5 and " " not in name:
            kinds["drug"].append((f"vocab.drug:{name}", name))
    for name in _vocab("brands"):
        kinds["brand"].append((f"vocab.brand:{name}", name.capitalize()))
    for name in _vocab("procedures"):
        kinds["procedure"].append((f"vocab.proc:{name}", name))
    for name in _vocab("labs"):
        if name.isascii() and 3 <= len(name) <= 25 and name[0].isalpha():
            kinds["test"].append((f"vocab.lab:{name}", name))
    return {k: tuple(v) for k, v in kinds.items()}


class _Note:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.entities: list[GoldEntity] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def entity(self, text: str, label: str, term: str, template: str, section: str, **flags: bool) -> None:
        start = self.length
        self.add(text)
        values = {f: bool(flags.get(f.removeprefix("is_"), False)) for f in _FLAGS}
        self.entities.append(GoldEntity(start, self.length, label, text, section=section, template_id=template,
                                        term=term, concept=term.split(":")[0], **values))


class ClinicComposer:
    """Clinic notes from one seed and split ("train", "test" or "all")."""

    def __init__(self, seed: int, split: str = "train") -> None:
        self.rng = random.Random(seed)
        self.split = split
        self.terms = {k: [t for t in v if in_split(t[0], split)] or list(v) for k, v in _terms().items()}

    def pick(self, kind: str) -> tuple[str, str]:
        return self.rng.choice(self.terms[kind])

    def header(self, note: _Note, key: str) -> None:
        note.add(self.rng.choice(HEADERS[key]) + self.rng.choice((" ", " ", "\n")))

    def listing(self, note: _Note, kind: str, label: str, section: str, n: int, sep: str = ", ",
                **flags: bool) -> None:
        for k in range(n):
            term, surface = self.pick(kind)
            if k:
                note.add(sep if k < n - 1 or self.rng.random() < 0.5 else self.rng.choice((", and ", " and ", ", ")))
            note.entity(surface, label, term, f"clinic.{section}.list", section, **flags)

    def slash_list(self, note: _Note, table: dict[str, str], section: str, **flags: bool) -> None:
        keys = self.rng.sample(sorted(table), self.rng.randint(2, min(5, len(table))))
        for k, key in enumerate(keys):
            if k:
                note.add("/")
            note.entity(key, "PROBLEM", f"shorthand:{key}", f"clinic.{section}.slash", section, **flags)

    # -- sections -------------------------------------------------------------------------------------------------

    def hpi(self, note: _Note) -> None:
        rng = self.rng
        self.header(note, "hpi")
        demo = rng.choice(DEMOGRAPHICS).format(age=rng.randint(19, 92), sex=rng.choice("MF"),
                                               sexw=rng.choice(("male", "female", "man", "woman")),
                                               race=rng.choice(("white", "black", "caucasian", "hispanic", "asian")))
        note.add(f"{demo} {rng.choice(('w/', 'with', 'w/ h/o', 'with a hx of'))} ")
        self.listing(note, "problem", "PROBLEM", "hpi", rng.randint(1, 2), historical=True)
        if rng.random() < 0.6:
            term, surface = self.pick("procedure")
            note.add(" s/p ")
            note.entity(surface + (rng.choice((" x3", " x2", "")) if rng.random() < 0.3 else ""), "TREATMENT", term,
                        "clinic.hpi.sp", "hpi", historical=True)
        note.add(rng.choice((" who presents for f/u of ", " here for f/u. Reports ", " p/w ", " c/o ")))
        self.listing(note, "symptom", "PROBLEM", "hpi", rng.randint(1, 3))
        note.add(rng.choice((". ", " x 3 days. ", " since last wk. ")))
        if rng.random() < 0.5:
            note.add(rng.choice(("Pain controlled on ", "Was started on ", "Tried ", "Improved w/ ")))
            self.listing(note, rng.choice(("drug", "brand")), "TREATMENT", "hpi", rng.randint(1, 2))
            note.add(". ")
        if rng.random() < 0.5:
            note.add(rng.choice(("Denies ", "Pt denies ", "No ", "Neg for ")))
            self.slash_list(note, SHORTHAND, "hpi", negated=True)
            note.add(". ")
        if rng.random() < 0.4:
            note.add(rng.choice(("Mom reports ", "Wife states ", "Per daughter, pt has had ")))
            self.listing(note, "symptom", "PROBLEM", "hpi", 1)
            note.add(". ")
        if rng.random() < 0.4:
            note.add(rng.choice(HARD_NEGATIVE_LINES) + " ")
        note.add("\n\n")

    def ros(self, note: _Note) -> None:
        rng = self.rng
        self.header(note, "ros")
        note.add(rng.choice(("Negative for ", "Neg for ", "Denies ", "(-) ", "Pt denies ")))
        self.listing(note, "symptom", "PROBLEM", "ros", rng.randint(2, 5), negated=True)
        if rng.random() < 0.5:
            note.add(rng.choice((". Positive for ", ". + ", ", but endorses ", ". Reports ")))
            self.listing(note, "symptom", "PROBLEM", "ros", 1)
        note.add(".\n\n")

    def history(self, note: _Note) -> None:
        rng = self.rng
        self.header(note, "pmh")
        self.listing(note, "problem", "PROBLEM", "pmh", rng.randint(1, 4), historical=True)
        note.add("\n")
        self.header(note, "psh")
        self.listing(note, "procedure", "TREATMENT", "psh", rng.randint(1, 3), historical=True)
        note.add("\n")
        self.header(note, "meds")
        for k in range(rng.randint(2, 5)):
            term, surface = self.pick(rng.choice(("drug", "brand")))
            if k:
                note.add(rng.choice((", ", "; ", "\n")))
            note.entity(surface, "TREATMENT", term, "clinic.meds.list", "meds")
            if rng.random() < 0.5:
                note.add(f" {rng.choice((5, 10, 20, 25, 40, 50, 100, 200))}{rng.choice(('mg', ' mg', 'mcg'))}"
                         f" {rng.choice(('daily', 'BID', 'TID', 'PRN', 'qhs', 'PO daily'))}")
        note.add("\n")
        self.header(note, "all")
        if rng.random() < 0.5:
            note.add(rng.choice(("NKDA", "none", "NKA")))
        else:
            term, surface = self.pick("drug")
            note.entity(surface, "TREATMENT", term, "clinic.all", "allergies")
        note.add("\n")
        self.header(note, "sh")
        if rng.random() < 0.5:
            note.add("Denies ")
            for k in range(rng.randint(1, 3)):
                if k:
                    note.add(", ")
                note.entity(rng.choice(SOCIAL), "PROBLEM", "social", "clinic.sh.neg", "sh", negated=True)
        else:
            note.add(rng.choice(("Smokes 1 ppd, ", "Former smoker, ", "Drinks beer on weekends, ")))
            note.entity(rng.choice(SOCIAL), "PROBLEM", "social", "clinic.sh.pos", "sh")
        note.add(". " + (rng.choice(HARD_NEGATIVE_LINES) if rng.random() < 0.6 else "") + "\n")
        self.header(note, "fh")
        note.add(rng.choice(("Mother with ", "Father - ", "Mom: ", "Brother w/ ")))
        self.listing(note, "problem", "PROBLEM", "fh", rng.randint(1, 2), family=True)
        note.add("\n\n")

    def exam(self, note: _Note) -> None:
        rng = self.rng
        self.header(note, "pe")
        note.add(f"VS: T {rng.randint(97, 101)}.{rng.randint(0, 9)} HR {rng.randint(55, 120)} BP "
                 f"{rng.randint(95, 170)}/{rng.randint(55, 100)}\n")
        note.add(rng.choice(("Gen: ", "General: ")) + rng.choice(("NAD, A&Ox3", "well appearing, NAD", "alert, ")))
        if rng.random() < 0.4:
            note.add("in ")
            note.entity(rng.choice(("mild distress", "moderate distress")), "PROBLEM", "exam.distress",
                        "clinic.pe.gen", "pe")
        note.add("\n" + rng.choice(("CV: ", "Heart: ", "CVS: ")) + rng.choice(("RRR, ", "RRR, nl S1S2, ")) + "no ")
        self.slash_list(note, EXAM_SHORTHAND, "pe", negated=True)
        note.add("\n" + rng.choice(("Pulm: ", "Lungs: ", "Resp: ")) + rng.choice(("CTAB, no ", "clear b/l, no ")))
        self.listing(note, "symptom", "PROBLEM", "pe", rng.randint(1, 2), sep=" or ", negated=True)
        note.add("\n" + rng.choice(("Abd: ", "Abdomen: ", "GI: ")) + "soft, ")
        for k, (short, full) in enumerate(rng.sample((("NT", "tenderness"), ("ND", "distension")), 2)):
            if k:
                note.add("/")
            note.entity(short, "PROBLEM", f"exam.{full}", "clinic.pe.abd", "pe", negated=True)
        note.add(", +BS\n" + rng.choice(("Ext: ", "Extremities: ")) + rng.choice(("no ", "No ", "without ")))
        self.listing(note, "symptom", "PROBLEM", "pe", rng.randint(1, 2), negated=True)
        note.add("\n" + rng.choice(("Skin: ", "Derm: ")))
        if rng.random() < 0.5:
            note.add("no ")
            self.listing(note, "problem", "PROBLEM", "pe", rng.randint(2, 3), negated=True)
        else:
            term, surface = self.pick("problem")
            note.entity(surface, "PROBLEM", term, "clinic.pe.skin", "pe")
            note.add(rng.choice((" on the left shin", " over the R 2nd toe", " of the abdomen")))
        note.add("\n\n")

    def plan(self, note: _Note) -> None:
        rng = self.rng
        self.header(note, "ap")
        term, surface = self.pick("problem")
        note.entity(surface, "PROBLEM", term, "clinic.ap.dx", "ap")
        note.add(rng.choice((" - ", ": ", ", ")) + rng.choice(("will order ", "check ", "obtain ", "get ")))
        self.listing(note, "test", "TEST", "ap", rng.randint(1, 2))
        note.add(rng.choice((" to assess for ", " to r/o ", " to evaluate for ")))
        term, surface = self.pick("problem")
        flag = "hypothetical" if note.parts[-1].strip() != "to r/o" else "uncertain"
        note.entity(surface, "PROBLEM", term, "clinic.ap.assess", "ap", **{flag: True})
        note.add(". " + rng.choice(("Start ", "Continue ", "Increase ", "Refilled ")))
        self.listing(note, rng.choice(("drug", "brand")), "TREATMENT", "ap", 1)
        note.add(rng.choice((". ", " BID. ", " 20mg daily. ")))
        if rng.random() < 0.5:
            note.add("Consider ")
            term, surface = self.pick("procedure")
            note.entity(surface, "TREATMENT", term, "clinic.ap.proc", "ap")
            note.add(". ")
        note.add(rng.choice(("F/u in 2 wks.", "RTC 3 mo.", "Return if worse.", "f/u with PCP.")) + "\n")

    def note(self) -> ComposedNote:
        note = _Note()
        sections: list[Callable[[_Note], None]] = [self.hpi, self.ros, self.history, self.exam, self.plan]
        if self.rng.random() < 0.3:
            sections = [self.hpi, self.history, self.ros, self.exam, self.plan]
        spans = []
        for section in sections:
            start = note.length
            section(note)
            spans.append((section.__name__, start, note.length))
        return ComposedNote("".join(note.parts), note.entities, sorted({e.template_id for e in note.entities}),
                            spans)


def clinic_notes(n_notes: int, seed: int = 13, split: str = "train") -> list[ComposedNote]:
    """`n_notes` clinic notes of one split (default "train": no held-out template or term)."""
    composer = ClinicComposer(seed, split)
    return [composer.note() for _ in range(n_notes)]
