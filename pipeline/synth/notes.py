"""Synthetic MIMIC-IV-Note style discharge summaries with gold entity annotations.

A note is composed section by section from sentence templates (data/templates.yaml) whose slots are
filled from a lexicon of surface variants (data/lexicon.csv, data/drugs.csv). Every filled slot is a
gold entity whose offsets are recorded while the text is built, so `text == note[start:end]` holds by
construction. Assertion flags come from the template (ConText-style trigger written next to the slot)
and from the section (Past Medical History -> historical, Family History -> family).

Train/test split: every template and every lexicon term has a stable id, and `split_of(id)` puts ~20%
of them in "test". `NoteComposer(split="train")` only uses train templates and terms, "test" only test
ones (falling back to any term of a concept only when it has none in the split), "all" everything.
Format tokens (section titles, list markers, MIMIC lab-line abbreviations, ids prefixed "struct.")
belong to both splits.

>>> composer = NoteComposer(seed=3, split="all")
>>> note = next(composer.corpus(1))
>>> all(note.text[e.start_char:e.end_char] == e.text for e in note.entities)
True
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.synth import _data
from pipeline.synth._data import STRUCTURAL_PREFIX, Slot, Template, in_split, split_of

__all__ = [
    "SECTION_TITLES",
    "ComposedNote",
    "GoldEntity",
    "NoteComposer",
    "NoteContext",
    "held_out_notes",
    "split_of",
    "training_notes",
    "varied_length_texts",
]

# The NER model is trained on seed 13's "train" notes and evaluated on seed 14's "test" notes.
TRAIN_SEED, EVAL_SEED = 13, 14

SECTION_TITLES: dict[str, list[str]] = {name: list(spec["titles"]) for name, spec in _data.sections().items()}
_SECTION_FLAGS: dict[str, frozenset[str]] = {
    name: frozenset(spec.get("flags", [])) for name, spec in _data.sections().items()
}


@dataclass(frozen=True, slots=True)
class GoldEntity:
    start_char: int
    end_char: int
    label: str  # PROBLEM | TREATMENT | TEST
    text: str
    is_negated: bool
    is_uncertain: bool
    is_historical: bool
    is_family: bool
    is_hypothetical: bool
    section: str
    template_id: str
    term: str  # lexicon term id, e.g. "chf:hfref"
    concept: str

    @property
    def flags(self) -> dict[str, bool]:
        return {
            "is_negated": self.is_negated, "is_uncertain": self.is_uncertain,
            "is_historical": self.is_historical, "is_family": self.is_family,
            "is_hypothetical": self.is_hypothetical,
        }


@dataclass(slots=True)
class ComposedNote:
    text: str
    entities: list[GoldEntity]
    template_ids: list[str]
    sections: list[tuple[str, int, int]]  # canonical name, start, end of the section body


@dataclass(slots=True)
class NoteContext:
    """What the note is about. Built from a generated stay, or at random for a stand-alone corpus."""

    age: int
    sex: str
    principal: str
    comorbidities: list[str]
    comorbidity_drugs: dict[str, list[str]]
    acute: list[str]
    symptoms: list[str]
    findings: list[str]
    tests: list[str]
    procedures: list[str]
    therapies: list[str]
    ddx: list[str]
    home_drugs: list[str]
    inpatient_drugs: list[str]
    discharge_drugs: list[str]
    admission_labs: dict[str, float]
    discharge_labs: dict[str, float]
    disposition: str = "HOME"
    expired: bool = False
    service: str = "MEDICINE"
    procedures_done: list[str] = field(default_factory=list)
    allergies: str = "Patient recorded as having No Known Allergies to Drugs"


_CONDITION_CONCEPTS = sorted({v["concept"] for c in _data.clinical()["conditions"].values() for v in c["variants"]})
_SOCIAL = ("tobacco_use", "alcohol_use_disorder", "opioid_use_disorder", "cocaine_use")
_ALLERGIES = (
    "Patient recorded as having No Known Allergies to Drugs",
    "No Known Allergies / Adverse Drug Reactions",
    "Penicillins",
    "Sulfa (Sulfonamide Antibiotics)",
    "Penicillins / Codeine",
    "lisinopril",
    "aspirin / Iodine",
)
_SURGICAL_SERVICES = {"hip_fx": "ORTHOPAEDICS", "tkr": "ORTHOPAEDICS", "colectomy": "SURGERY",
                      "cholecystitis": "SURGERY", "sbo": "SURGERY", "stroke": "NEUROLOGY", "nstemi": "CARDIOLOGY"}


def context_from_stay(stay, sex: str, rng: random.Random, expired: bool = False) -> NoteContext:
    """Note context for a generated stay (see clinical.Stay): the note agrees with the coded diagnoses."""
    spec = _data.clinical()
    p = stay.principal_spec
    superseded = {spec["conditions"][c].get("supersedes") for c in stay.conditions}
    comorbs, comorb_drugs = [], {}
    for cond, variant in stay.conditions.items():
        if cond in superseded:
            continue
        variants = spec["conditions"][cond]["variants"]
        concept = variants[variant % len(variants)]["concept"]
        if concept == stay.principal_variant["concept"]:
            continue
        comorbs.append(concept)
        comorb_drugs[concept] = [d for d in stay.home_drugs if d in spec["conditions"][cond].get("drugs", [])]
    symptoms = rng.sample(p["symptoms"], min(len(p["symptoms"]), rng.randint(2, 4)))
    findings = rng.sample(p["findings"], min(len(p["findings"]), rng.randint(1, 3)))
    procedures = [x for x in p["procedures"] if rng.random() < 0.5][:1]
    return NoteContext(
        age=min(stay.age, 89) if rng.random() < 0.5 else stay.age,
        sex=sex,
        principal=stay.principal_variant["concept"],
        comorbidities=comorbs,
        comorbidity_drugs=comorb_drugs,
        acute=[r["concept"] for r in stay.lab_problems],
        symptoms=symptoms,
        findings=findings,
        tests=list(p["tests"]),
        procedures=list(p["procedures"]),
        therapies=list(p["therapies"]),
        ddx=list(p["ddx"]),
        home_drugs=list(stay.home_drugs),
        inpatient_drugs=list(stay.inpatient_drugs),
        discharge_drugs=list(stay.discharge_drugs),
        admission_labs=dict(stay.admission_labs),
        discharge_labs=dict(stay.discharge_labs),
        disposition=stay.disposition,
        expired=expired,
        service=_SURGICAL_SERVICES.get(stay.principal, "MEDICINE"),
        procedures_done=procedures,
        allergies=rng.choice(_ALLERGIES) if rng.random() < 0.4 else _ALLERGIES[0],
    )


def random_context(rng: random.Random) -> NoteContext:
    """A self-contained random patient and stay, for NER training corpora."""
    from datetime import date

    from pipeline.synth import clinical

    patient = clinical.make_patient(rng, 0, 10000000, date(2020, 1, 1))
    stay = clinical.make_stay(rng, patient, n_prior=rng.randint(0, 2), on_day=date(2020, 1, 1))
    return context_from_stay(stay, patient.sex, rng, expired=rng.random() < 0.03)


class _Builder:
    """Accumulates note text and gold entities with exact offsets."""

    __slots__ = ("entities", "parts", "pos", "section", "template_ids")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.entities: list[GoldEntity] = []
        self.section = "header"
        self.template_ids: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.pos += len(text)

    def entity(self, text: str, label: str, flags: frozenset[str], term: str, concept: str, template_id: str) -> None:
        flags = flags | (_SECTION_FLAGS.get(self.section, frozenset()) if label == "PROBLEM" else frozenset())
        start = self.pos
        self.add(text)
        self.entities.append(GoldEntity(
            start, self.pos, label, text, "neg" in flags, "unc" in flags, "hist" in flags, "fam" in flags,
            "hyp" in flags, self.section, template_id, term, concept,
        ))

    def text(self) -> str:
        return "".join(self.parts)


class NoteComposer:
    """Composes discharge summaries. `split` is "train", "test" or "all" (see module docstring)."""

    def __init__(self, seed: int = 1, split: str = "all") -> None:
        if split not in ("train", "test", "all"):
            raise ValueError(f"E-SYN010 split must be 'train', 'test' or 'all', got {split!r}")
        self.split = split
        self.rng = random.Random(f"note-composer:{seed}:{split}")
        self._lexicon = _data.lexicon()
        self._terms = {
            name: [t for t in c.terms if in_split(t.term_id, split)] for name, c in self._lexicon.items()
        }
        all_templates = _data.templates()
        self._templates: dict[str, list[Template]] = {}
        for group, items in all_templates.items():
            chosen = [t for t in items if in_split(t.template_id, split)]
            if not chosen and split == "test":
                chosen = list(items)  # fallback: a group without test templates
            self._templates[group] = chosen
        self._pools = {
            kind: [n for n, c in self._lexicon.items() if c.kind == kind and self._terms[n]]
            for kind in ("symptom", "finding", "problem", "test", "therapy", "procedure", "labname")
        }
        self._family_pool = [c for c in _CONDITION_CONCEPTS if self._terms.get(c)]
        self._groups = _data.concept_groups()

    # --- public -------------------------------------------------------------------------------
    def corpus(self, n: int) -> Iterator[ComposedNote]:
        """`n` self-contained notes (random patients), deterministic for the composer's seed."""
        for _ in range(n):
            yield self.compose(None)

    def compose(self, context: NoteContext | random.Random | None = None, rng: random.Random | None = None) -> ComposedNote:
        """Compose one note. `context` may be a NoteContext, a Random (random context from it) or None."""
        if isinstance(context, random.Random):
            rng, context = context, None
        rng = rng or self.rng
        if context is None:
            context = random_context(rng)
        return _Composition(self, context, rng).build()

    # --- helpers used by _Composition ------------------------------------------------------------
    def term_for(self, concept: str, rng: random.Random, fallback_kind: str | None = None,
                 group: str | None = None) -> tuple[str, str, str]:
        """(surface, term id, concept) for a concept, honouring the split (and the slot's group on fallback)."""
        terms = self._terms.get(concept)
        if not terms and fallback_kind and self._pools.get(fallback_kind):
            pool = self.pool(fallback_kind, group) or self._pools[fallback_kind]
            concept = rng.choice(pool)
            terms = self._terms[concept]
        if not terms:
            if self.split == "train" or concept not in self._lexicon:
                concept = rng.choice(self._pools["problem"])
                terms = self._terms[concept]
            else:
                terms = list(self._lexicon[concept].terms)  # test split fallback: concept has no test term
        term = rng.choice(terms)
        return term.surface, term.term_id, concept

    def pool(self, kind: str, group: str | None) -> list[str]:
        """Concepts of a kind (in this split), restricted to a group (exam system, test category) when given."""
        if group is None:
            return self._pools[kind]
        return [c for c in self._pools[kind] if self._groups.get(c) == group]


_HE = {"F": ("she", "She", "her", "Her", "woman", "F", "Ms."), "M": ("he", "He", "his", "His", "man", "M", "Mr.")}
_MAN_WORDS = {"F": ("woman", "female", "F", "lady"), "M": ("man", "male", "M", "gentleman")}


class _Composition:
    def __init__(self, composer: NoteComposer, ctx: NoteContext, rng: random.Random) -> None:
        self.c = composer
        self.ctx = ctx
        self.rng = rng
        self.b = _Builder()
        self.focus_drugs: list[str] | None = None
        self.used_absent: set[str] = set()
        present = set(ctx.symptoms) | set(ctx.findings) | {ctx.principal} | set(ctx.comorbidities) | set(ctx.acute)
        self.absent_pool = [s for s in composer._pools["symptom"] if s not in present]
        self.absent_finding_pool = [s for s in composer._pools["finding"] if s not in present]
        self.upper_titles = rng.random() < 0.25
        self.title_variety = rng.random() < 0.35

    # --- slot filling -----------------------------------------------------------------------------
    def _drug_text(self, key: str, with_dose: bool, capital: bool) -> tuple[str, str, str, str]:
        """(name, term id, concept, dose): the entity is the drug's name; its dose (" 40 mg") follows as plain text,
        as schemas/nlp/annotation_guidelines.md draws TREATMENT spans."""
        surface, term_id, concept = self.c.term_for(f"drug.{key}", self.rng)
        if not concept.startswith("drug."):
            return surface, term_id, concept, ""
        if capital:
            surface = surface[:1].upper() + surface[1:]
        dose = ""
        if with_dose:
            row = _data.drugs()[concept[5:]].row
            dose = f" {row['dose_val_rx']} {row['dose_unit_rx']}"
        return surface, term_id, concept, dose

    def _drug_in_split(self, key: str) -> bool:
        return bool(self.c._terms.get(f"drug.{key}"))

    def _pick_drug(self) -> str | None:
        pool = self.focus_drugs if self.focus_drugs else (self.ctx.inpatient_drugs + self.ctx.discharge_drugs)
        if self.c.split != "all":
            # a drug without a term in this split is swapped for one that has, so splits stay disjoint
            pool = [k for k in pool if self._drug_in_split(k)] or [
                k for k in _data.drugs() if self._drug_in_split(k)]
        return self.rng.choice(pool) if pool else None

    def _concept_for(self, kind: str, group: str | None = None) -> tuple[str, str | None]:
        """(concept, fallback kind) for an entity slot; `group` narrows findings to a body system and tests
        to a category, so an exam line or an imaging report names something that belongs there."""
        ctx, rng = self.ctx, self.rng

        def mine(concepts: list[str]) -> list[str]:
            return [c for c in concepts if group is None or self.c._groups.get(c) == group]

        if kind == "principal":
            return ctx.principal, "problem"
        if kind == "comorb":
            return (rng.choice(ctx.comorbidities) if ctx.comorbidities else rng.choice(self.c._family_pool)), "problem"
        if kind == "symptom":
            return (rng.choice(ctx.symptoms) if ctx.symptoms else "fatigue"), "symptom"
        if kind == "finding":
            options = mine(ctx.findings) or self.c.pool("finding", group) or self.c._pools["finding"]
            return rng.choice(options), "finding"
        if kind == "absent":
            options = [s for s in self.absent_pool if s not in self.used_absent] or self.absent_pool
            pick = rng.choice(options)
            self.used_absent.add(pick)
            return pick, "symptom"
        if kind == "absent_finding":
            return rng.choice(mine(self.absent_finding_pool) or self.absent_finding_pool), "finding"
        if kind == "absent_social":
            options = [s for s in _SOCIAL if s not in ctx.comorbidities] or list(_SOCIAL)
            return rng.choice(options), "problem"
        if kind == "ddx":
            return (rng.choice(ctx.ddx) if ctx.ddx else rng.choice(self.c._pools["problem"])), "problem"
        if kind == "famprob":
            return rng.choice(self.c._family_pool), "problem"
        if kind == "acute":
            return (rng.choice(ctx.acute) if ctx.acute else ctx.principal), "problem"
        if kind == "procedure":
            options = ctx.procedures_done or ctx.procedures
            return (rng.choice(options) if options else rng.choice(self.c._pools["procedure"])), "procedure"
        if kind == "therapy":
            return (rng.choice(ctx.therapies) if ctx.therapies else rng.choice(self.c._pools["therapy"])), "therapy"
        if kind == "test":
            options = mine(ctx.tests) or self.c.pool("test", group) or self.c._pools["test"]
            return rng.choice(options), "test"
        if kind == "labname":
            return rng.choice(self.c._pools["labname"]), "labname"
        raise KeyError(kind)

    def _fill_entity(self, slot: Slot, template_id: str, upper: bool) -> None:
        rng = self.rng
        count = rng.randint(2, 4) if slot.is_list else 1
        for i in range(count):
            if i:
                self.b.add(", " if i < count - 1 else rng.choice((", or ", " or ", ", ", " and ")))
            dose = ""
            if slot.kind in ("drug", "drugname"):
                key = self._pick_drug()
                if key is None:
                    surface, term_id, concept = self.c.term_for("iv_fluids", rng, "therapy")
                else:
                    surface, term_id, concept, dose = self._drug_text(key, slot.kind == "drug", rng.random() < 0.3)
            else:
                concept, fallback = self._concept_for(slot.kind, slot.group)
                surface, term_id, concept = self.c.term_for(concept, rng, fallback, slot.group)
            label = self.c._lexicon[concept].label
            if upper:
                surface = surface.upper()
            elif rng.random() < 0.01 and len(surface) > 6 and surface.isalpha():
                k = rng.randrange(1, len(surface) - 2)  # a realistic transposition typo
                surface = surface[:k] + surface[k + 1] + surface[k] + surface[k + 2 :]
            self.b.entity(surface, label, slot.flags, term_id, concept, template_id)
            if dose:
                self.b.add(dose.upper() if upper else dose)

    def _plain(self, kind: str) -> str:
        he, He, his, His, _, sx, mr = _HE[self.ctx.sex]
        rng = self.rng
        return {
            "age": str(self.ctx.age), "he": he, "He": He, "his": his, "His": His,
            "man": rng.choice(_MAN_WORDS[self.ctx.sex]), "n": str(rng.randint(2, 7)), "day": str(rng.randint(1, 5)),
            "___": "___", "sx": sx, "mr": mr,
        }[kind]

    def template(self, group: str, sentence_end: str = " ") -> bool:
        options = self.c._templates.get(group) or []
        if not options:
            return False
        tpl = self.rng.choice(options)
        self.render(tpl)
        self.b.add(sentence_end)
        return True

    def render(self, tpl: Template) -> None:
        rng = self.rng
        upper = rng.random() < 0.03
        # no typos next to assertion cues: a misspelt "denies" would make the gold flag wrong
        typo_ok = not any(isinstance(p, Slot) and p.flags for p in tpl.parts)
        self.b.template_ids.append(tpl.template_id)
        for part in tpl.parts:
            if isinstance(part, str):
                text = part.upper() if upper else part
                if typo_ok and rng.random() < 0.015:
                    text = _typo(text, rng)
                self.b.add(text)
            elif part.kind in _data.PLAIN_SLOTS:
                text = self._plain(part.kind)
                self.b.add(text.upper() if upper else text)
            else:
                self._fill_entity(part, tpl.template_id, upper)

    def structural_entity(self, concept: str, kind: str, struct_id: str, flags: frozenset[str] = frozenset()) -> None:
        surface, term_id, concept = self.c.term_for(concept, self.rng, kind)
        self.b.entity(surface, self.c._lexicon[concept].label, flags, term_id, concept, STRUCTURAL_PREFIX + struct_id)

    # --- layout -----------------------------------------------------------------------------------
    def title(self, section: str) -> str:
        titles = SECTION_TITLES[section]
        title = self.rng.choice(titles) if self.title_variety else titles[0]
        return title.upper() if self.upper_titles else title

    def section(self, name: str, body) -> None:
        self.b.section = "header"
        self.b.add(f"{self.title(name)}:\n")
        start = self.b.pos
        self.b.section = name
        body()
        self.b.add(" \n" if self.b.parts and self.b.parts[-1].endswith("\n") else "\n \n")
        self.sections.append((name, start, self.b.pos))

    def build(self) -> ComposedNote:
        ctx, rng, b = self.ctx, self.rng, self.b
        self.sections: list[tuple[str, int, int]] = []
        b.add(" \nName:  ___                     Unit No:   ___\n \n")
        b.add("Admission Date:  ___              Discharge Date:   ___\n \n")
        b.add(f"Date of Birth:  ___             Sex:   {ctx.sex}\n \n")
        b.add(f"Service: {ctx.service}\n \n")
        self.section("allergies", self._allergies)
        b.section = "header"
        b.add("Attending: ___.\n \n")
        self.section("chief_complaint", lambda: self.template("cc", "\n"))
        self.section("procedures", self._procedures)
        self.section("history_of_present_illness", self._hpi)
        if rng.random() < 0.35:
            self.section("review_of_systems", lambda: self.template("ros", "\n"))
        self.section("past_medical_history", self._pmh)
        tail = [("social_history", self._social), ("family_history", self._family)]
        if rng.random() < 0.2:
            tail.reverse()
        for name, body in tail:
            self.section(name, body)
        self.section("physical_exam", self._exam)
        course = [("pertinent_results", self._results), ("brief_hospital_course", self._course)]
        if rng.random() < 0.15:
            course.reverse()
        for name, body in course:
            self.section(name, body)
        self.section("medications_on_admission", self._home_meds)
        self.section("discharge_medications", self._discharge_meds)
        self.section("discharge_disposition", self._disposition)
        self.section("discharge_diagnosis", self._diagnosis)
        self.section("discharge_condition", self._condition)
        if not ctx.expired:
            self.section("discharge_instructions", self._instructions)
        self.section("followup_instructions", lambda: b.add("___\n"))
        return ComposedNote(b.text(), b.entities, b.template_ids, self.sections)

    def _allergies(self) -> None:
        if self.ctx.allergies == "lisinopril" and self.c._terms.get("drug.lisinopril"):
            # a drug allergy names a treatment; annotate it when the drug is in the lexicon
            surface, term_id, concept = self.c.term_for("drug.lisinopril", self.rng)
            self.b.entity(surface, "TREATMENT", frozenset(), term_id, concept, STRUCTURAL_PREFIX + "allergy")
            self.b.add("\n")
            return
        self.b.add(self.ctx.allergies + "\n")

    def _procedures(self) -> None:
        if self.ctx.procedures_done and self.template("procedures", "\n"):
            return
        self.b.add(self.rng.choice(("None", "none", "None.", "___")) + "\n")

    def _hpi(self) -> None:
        rng = self.rng
        self.template("hpi_open")
        for _ in range(rng.randint(1, 4)):
            self.template("hpi_body")
        for _ in range(rng.randint(1, 2)):
            self.template("hpi_neg")
        if rng.random() < 0.6:
            self.template("hpi_unc")
        if rng.random() < 0.5:
            self.b.add("\n \n")
        for _ in range(rng.randint(1, 3)):
            self.template("hpi_ed")
        self.b.add("\n")

    def _pmh(self) -> None:
        rng, b = self.rng, self.b
        items = list(self.ctx.comorbidities) or ["hypertension"]
        rng.shuffle(items)
        style = rng.randrange(4)
        for i, concept in enumerate(items):
            if style == 0:
                b.add("- ")
            elif style == 1:
                b.add(f"{i + 1}. ")
            elif style == 2:
                b.add("# ")
            self.structural_entity(concept, "problem", "pmh")
            if style == 3:
                b.add(", " if i < len(items) - 1 else "\n")
            else:
                b.add("\n")
        if self.ctx.procedures and rng.random() < 0.25:
            b.add("s/p ")
            self.structural_entity(rng.choice(self.ctx.procedures), "procedure", "pmh_proc", frozenset({"hist"}))
            b.add("\n")

    def _social(self) -> None:
        self.b.add("___\n" if self.rng.random() < 0.4 else "")
        for _ in range(self.rng.randint(1, 2)):
            self.template("social")
        self.b.add("\n")

    def _family(self) -> None:
        for _ in range(self.rng.randint(1, 2)):
            self.template("fh")
        self.b.add("\n")

    def _vitals(self) -> str:
        r = self.rng
        return (f"VS: T {r.uniform(97.2, 100.4):.1f} BP {r.randint(95, 165)}/{r.randint(50, 95)} "
                f"HR {r.randint(55, 115)} RR {r.randint(12, 24)} O2 {r.randint(89, 100)}% "
                f"{r.choice(('RA', '2L NC', 'RA', '3L'))}\n")

    # Body systems in the order a discharge summary lists them, with how often a normal line is written.
    _EXAM_SYSTEMS = (("vitals", 0.0), ("general", 0.9), ("heent", 0.5), ("neck", 0.5), ("cv", 1.0), ("pulm", 1.0), ("abd", 0.95),
                     ("back", 0.1), ("ext", 0.9), ("skin", 0.35), ("neuro", 0.7))

    def _exam_lines(self, abnormal: set[str], normal_rate: float) -> None:
        for system, rate in self._EXAM_SYSTEMS:
            if system in abnormal:
                self.template(f"exam_{system}", "\n")
            elif self.rng.random() < rate * normal_rate:
                self.template(f"exam_{system}_normal", "\n")

    def _exam(self) -> None:
        rng = self.rng
        groups = self.c._groups
        # the systems where this patient has findings get an abnormal line, every other system a normal one
        abnormal = {groups.get(f, "general") for f in self.ctx.findings}
        if rng.random() < 0.5:
            self.b.add(rng.choice(("ADMISSION EXAM:\n", "Admission exam:\n", "ON ADMISSION:\n")))
        self.b.add(self._vitals())
        self._exam_lines(abnormal, 1.0)
        if rng.random() < 0.5:
            self.b.add(rng.choice(("\nDISCHARGE EXAM:\n", "\nDischarge exam:\n", "\nON DISCHARGE:\n")))
            self.b.add(self._vitals())
            # by discharge most findings have resolved; some persist
            persisting = {s for s in sorted(abnormal) if rng.random() < 0.3}  # sorted: set order varies by process
            self._exam_lines(persisting, 0.6)

    def _lab_line(self, labs: dict[str, float], panel: tuple[str, ...]) -> None:
        items = _data.lab_items()
        keys = [k for k in panel if k in labs]
        if not keys:
            return
        b = self.b
        b.add(f"___ {self.rng.choice(('05:50AM', '06:10AM', '07:25AM', '04:45PM', '11:30PM', '06:35AM'))} BLOOD")
        for key in keys:
            item = items[key]
            b.add(" ")
            b.entity(item.abbr, "TEST", frozenset(), f"{STRUCTURAL_PREFIX}labline:{key}", f"{key}_lab",
                     STRUCTURAL_PREFIX + "labline")
            value = labs[key]
            star = "*" if (value < item.ref_lower or value > item.ref_upper) else ""
            b.add(f"-{value:.{item.decimals}f}{star}")
        b.add("\n")

    def _results(self) -> None:
        rng, ctx = self.rng, self.ctx
        self.b.add(rng.choice(("ADMISSION LABS:\n", "Admission labs:\n", "LABS ON ADMISSION:\n", "")))
        cbc = ("wbc", "hemoglobin", "hematocrit", "platelets")
        chem = ("glucose", "bun", "creatinine", "sodium", "potassium", "chloride", "bicarbonate", "anion_gap")
        extra = ("albumin", "bilirubin", "inr", "lactate", "ntprobnp", "troponin_t")
        for panel in (cbc, chem, extra):
            self._lab_line(ctx.admission_labs, panel)
        if rng.random() < 0.6 and ctx.discharge_labs:
            self.b.add(rng.choice(("\nDISCHARGE LABS:\n", "\nDischarge labs:\n", "\nLABS ON DISCHARGE:\n")))
            self._lab_line(ctx.discharge_labs, cbc)
            self._lab_line(ctx.discharge_labs, chem)
        self.b.add(rng.choice(("\nIMAGING:\n", "\nImaging:\n", "\nSTUDIES:\n", "\n")))
        for _ in range(rng.randint(1, 3)):
            self.template("results_imaging", "\n")

    def _course(self) -> None:
        rng, ctx, b = self.rng, self.ctx, self.b
        self.template("course_intro", "\n \n")
        hashes = rng.random() < 0.7
        b.add("# " if hashes else "")
        self.structural_entity(ctx.principal, "problem", "course_header")
        b.add(":\n" if hashes else ": ")
        for _ in range(rng.randint(2, 4)):
            self.template("course_problem")
        b.add("\n \n")
        for acute in ctx.acute:
            b.add("# " if hashes else "")
            self.structural_entity(acute, "problem", "course_header")
            b.add(": ")
            self.template("course_problem")
            b.add("\n \n")
        if hashes and ctx.comorbidities:
            b.add(rng.choice(("CHRONIC ISSUES:\n", "Chronic issues:\n", "")))
        for concept in ctx.comorbidities[: rng.randint(1, 4)]:
            b.add("# " if hashes else "")
            self.structural_entity(concept, "problem", "course_header")
            b.add(": ")
            self.focus_drugs = ctx.comorbidity_drugs.get(concept) or None
            self.template("course_comorb", "\n")
            self.focus_drugs = None
        if ctx.expired:
            b.add(rng.choice(("\nThe patient was made CMO after discussion with family and expired on ___.\n",
                              "\nPatient passed away on ___ with family at bedside.\n")))

    def _med_list(self, keys: list[str], struct_id: str) -> None:
        rng, b = self.rng, self.b
        if self.c.split != "all":
            keys = [k for k in keys if self._drug_in_split(k)]
        if not keys:
            b.add("None\n")
            return
        for i, key in enumerate(keys):
            b.add(f"{i + 1}. ")
            surface, term_id, concept, dose = self._drug_text(key, with_dose=True, capital=True)
            b.entity(surface, "TREATMENT", frozenset(), term_id, concept, STRUCTURAL_PREFIX + struct_id)
            b.add(dose)
            b.add(f" {_data.drugs()[key].row['sig']}\n" if concept.startswith("drug.") else "\n")
        if rng.random() < 0.2:
            b.add("\n")

    def _home_meds(self) -> None:
        if self.rng.random() < 0.6:
            self.b.add("The Preadmission Medication list is accurate and complete.\n")
        self._med_list(self.ctx.home_drugs, "home_meds")

    def _discharge_meds(self) -> None:
        self._med_list([] if self.ctx.expired else self.ctx.discharge_drugs, "discharge_meds")

    def _disposition(self) -> None:
        mapping = {"HOME": "Home", "HOME HEALTH CARE": "Home With Service", "SKILLED NURSING FACILITY": "Extended Care",
                   "REHAB": "Extended Care", "HOSPICE": "Home With Service", "CHRONIC/LONG TERM ACUTE CARE": "Extended Care",
                   "AGAINST ADVICE": "Home"}
        text = "Expired" if self.ctx.expired else mapping.get(self.ctx.disposition, "Home")
        self.b.add(text + "\n")
        if text != "Home" and text != "Expired":
            self.b.add(" \nFacility:\n___\n")

    def _diagnosis(self) -> None:
        rng, b, ctx = self.rng, self.b, self.ctx
        style = rng.randrange(3)
        b.add(("Primary:\n", "PRIMARY DIAGNOSIS:\n", "")[style])
        self.structural_entity(ctx.principal, "problem", "dx")
        b.add("\n")
        secondary = list(ctx.acute) + list(ctx.comorbidities)
        if secondary:
            b.add(("\nSecondary:\n", "\nSECONDARY DIAGNOSES:\n", "")[style])
            for concept in secondary:
                b.add(rng.choice(("", "- ", "")) if style != 2 else "")
                self.structural_entity(concept, "problem", "dx")
                b.add("\n")

    def _condition(self) -> None:
        if self.ctx.expired:
            self.b.add("Expired\n")
            return
        rng = self.rng
        self.b.add(rng.choice(("Mental Status: Clear and coherent.\n", "Mental Status: Confused - sometimes.\n")))
        self.b.add("Level of Consciousness: Alert and interactive.\n")
        self.b.add(rng.choice(("Activity Status: Ambulatory - Independent.\n",
                               "Activity Status: Ambulatory - requires assistance or aid (walker or cane).\n",
                               "Activity Status: Out of Bed with assistance to chair or wheelchair.\n")))

    def _instructions(self) -> None:
        rng = self.rng
        self.template("instr_intro", "\n \n")
        for _ in range(rng.randint(1, 3)):
            self.template("instr_tx", "\n")
        self.b.add("\n")
        for _ in range(rng.randint(1, 2)):
            self.template("instr_hyp", "\n")
        self.b.add("\n")
        self.template("instr_close", "\n")


def _typo(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 5 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    k = rng.randrange(1, len(w) - 2)
    words[i] = w[:k] + w[k + 1] + w[k] + w[k + 2 :]
    return " ".join(words)


# --- corpora for training, evaluation and benchmarks ----------------------------------------------------------
def training_notes(n_notes: int, seed: int = TRAIN_SEED) -> list[ComposedNote]:
    """``n_notes`` notes of the "train" split: only templates and terms the held-out split never uses."""
    return list(NoteComposer(seed=seed, split="train").corpus(n_notes))


def held_out_notes(n_notes: int, seed: int = EVAL_SEED) -> list[ComposedNote]:
    """``n_notes`` notes of the held-out "test" split (unseen templates and terms), for evaluation."""
    return list(NoteComposer(seed=seed, split="test").corpus(n_notes))


def varied_length_texts(n_notes: int, seed: int = 7, min_chars: int = 300, max_chars: int = 6000) -> list[str]:
    """Note texts with lengths spread uniformly over ``min_chars``..``max_chars`` (cut at a space where one is
    past ``min_chars // 2``): two consecutive composed notes joined, then cut, so long lengths exist.

    >>> texts = varied_length_texts(3, seed=1)
    >>> len(texts), all(150 <= len(t) <= 6000 for t in texts), texts == varied_length_texts(3, seed=1)
    (3, True, True)
    """
    rng = random.Random(seed)
    pool = [note.text for note in NoteComposer(seed=seed, split="all").corpus(n_notes + 1)]
    texts = []
    for i in range(n_notes):
        joined = pool[i] + "\n" + pool[i + 1]
        length = rng.randint(min_chars, max_chars)
        cut = joined.rfind(" ", 0, length)
        texts.append(joined[: cut if cut > min_chars // 2 else length])
    return texts
