"""The clinical model behind the synthetic data: patients, chronic conditions, stays, labs, drugs, outcomes.

Time-free: a `Stay` carries durations and lab offsets in hours; `generate` places stays on the calendar.
Outcomes (30-day readmission, death in hospital, death within a year) are drawn from logistic models.
Readmission (`readmission_logit`) depends only modestly on LACE's inputs (length of stay, acute admission,
Charlson, prior visits) and mostly on what else is known at discharge: labs still abnormal at discharge,
albumin, specific comorbidities, the number of drugs, age, prior admissions and disposition, so a risk
model with those features has real signal to find beyond LACE. Deaths depend on age, Charlson burden,
admission labs (albumin, creatinine, sodium, haemoglobin, lactate), prior admissions and disposition.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date

from pipeline.synth import _data

# MIMIC-IV admission_type vocabulary by kind of admission, with weights.
ADMISSION_TYPES: dict[str, tuple[tuple[str, float], ...]] = {
    "emergency": (("EW EMER.", 0.70), ("URGENT", 0.10), ("DIRECT EMER.", 0.06), ("EU OBSERVATION", 0.08),
                  ("OBSERVATION ADMIT", 0.06)),
    "observation": (("EU OBSERVATION", 0.40), ("OBSERVATION ADMIT", 0.30), ("DIRECT OBSERVATION", 0.10),
                    ("AMBULATORY OBSERVATION", 0.05), ("EW EMER.", 0.15)),
    "urgent": (("URGENT", 0.55), ("EW EMER.", 0.45)),
    "elective": (("ELECTIVE", 0.5), ("SURGICAL SAME DAY ADMISSION", 0.5)),
}
EMERGENCY_TYPES = frozenset({"EW EMER.", "DIRECT EMER.", "URGENT", "EU OBSERVATION"})
ED_TYPES = {"EW EMER.": 1.0, "EU OBSERVATION": 1.0, "OBSERVATION ADMIT": 0.6, "URGENT": 0.4}

DISPOSITIONS = ("HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY", "REHAB", "HOSPICE",
                "CHRONIC/LONG TERM ACUTE CARE", "AGAINST ADVICE")


@dataclass(slots=True)
class Patient:
    index: int
    subject_id: int
    sex: str
    birth_date: date
    conditions: dict[str, int]  # condition key -> variant index
    home_drugs: dict[str, list[str]]  # condition key -> drug keys
    race: str
    language: str
    marital_status: str
    religion: str

    def age_on(self, day: date) -> int:
        years = day.year - self.birth_date.year
        return years - ((day.month, day.day) < (self.birth_date.month, self.birth_date.day))

    def charlson(self) -> int:
        conds = _data.clinical()["conditions"]
        return sum(int(conds[c].get("charlson", 0)) for c in self.conditions)


@dataclass(slots=True)
class LabDraw:
    draw: int  # 0 = on arrival, i = morning labs of hospital day i
    hours: float  # offset after admission for draw 0; minutes after 04:30 for morning draws
    key: str
    value: float
    priority: str


@dataclass(slots=True)
class Stay:
    principal: str
    variant: int
    admission_type: str
    los_hours: float
    acuity: float
    n_prior: int
    age: int
    conditions: dict[str, int]
    labs: list[LabDraw]
    admission_labs: dict[str, float]
    discharge_labs: dict[str, float]
    home_drugs: list[str]
    inpatient_drugs: list[str]
    discharge_drugs: list[str]
    lab_problems: list[dict]
    disposition: str
    p_readmit: float
    p_death_hospital: float
    p_death_year: float
    ed_hours: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def emergency(self) -> bool:
        return self.admission_type in EMERGENCY_TYPES

    @property
    def principal_spec(self) -> dict:
        return _data.clinical()["principals"][self.principal]

    @property
    def principal_variant(self) -> dict:
        variants = self.principal_spec["variants"]
        return variants[self.variant % len(variants)]


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _weighted(rng: random.Random, items: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([i for i, _ in items], weights=[w for _, w in items])[0]


def make_patient(rng: random.Random, index: int, subject_id: int, ref_day: date) -> Patient:
    """A patient with age, sex and chronic conditions drawn with age-dependent prevalence."""
    age = int(min(95, max(18, rng.gauss(64, 17))))
    sex = "F" if rng.random() < 0.5 else "M"
    birth = date(ref_day.year - age - 1, 1, 1).toordinal() + rng.randrange(365)
    birth_date = date.fromordinal(birth)
    spec = _data.clinical()["conditions"]
    conditions: dict[str, int] = {}
    # yaml keeps file order, so `requires` targets (listed earlier) are decided first.
    for key, c in spec.items():
        if c.get("sex") and c["sex"] != sex:
            continue
        if c.get("requires") and c["requires"] not in conditions:
            continue
        a, b = c["prev"]
        if rng.random() < _logistic(a + b * (age - 60) / 10):
            variants = c["variants"]
            allowed = [i for i, v in enumerate(variants) if v.get("sex", sex) == sex]
            conditions[key] = rng.choice(allowed)
    home_drugs = {k: _pick_drugs(rng, spec[k].get("drugs", []), 1 + (rng.random() < 0.35)) for k in conditions}
    race = _weighted(rng, (("WHITE", 0.62), ("BLACK/AFRICAN AMERICAN", 0.14), ("HISPANIC/LATINO - PUERTO RICAN", 0.03),
                           ("HISPANIC OR LATINO", 0.04), ("ASIAN", 0.03), ("ASIAN - CHINESE", 0.02),
                           ("WHITE - OTHER EUROPEAN", 0.03), ("OTHER", 0.04), ("UNKNOWN", 0.05)))
    language = _weighted(rng, (("ENGLISH", 0.89), ("SPANISH", 0.04), ("CHINESE", 0.02), ("RUSSIAN", 0.015),
                               ("PORTUGUESE", 0.01), ("?", 0.025)))
    marital = _weighted(rng, (("MARRIED", 0.45), ("SINGLE", 0.3), ("WIDOWED", 0.15 if age > 60 else 0.02),
                              ("DIVORCED", 0.08)))
    religion = _weighted(rng, (("CATHOLIC", 0.35), ("PROTESTANT QUAKER", 0.12), ("JEWISH", 0.08),
                               ("NOT SPECIFIED", 0.25), ("UNOBTAINABLE", 0.1), ("OTHER", 0.1)))
    return Patient(index, subject_id, sex, birth_date, conditions, home_drugs, race, language, marital, religion)


def _pick_drugs(rng: random.Random, options: list[str], n: int) -> list[str]:
    return rng.sample(options, min(n, len(options))) if options else []


def _choose_principal(rng: random.Random, patient: Patient) -> str:
    principals = _data.clinical()["principals"]
    keys, weights = [], []
    for key, p in principals.items():
        if p.get("requires") and p["requires"] not in patient.conditions:
            continue
        w = float(p["weight"])
        for cond, factor in (p.get("boost") or {}).items():
            if cond in patient.conditions:
                w *= factor
        keys.append(key)
        weights.append(w)
    return rng.choices(keys, weights=weights)[0]


def _lab_value(item: _data.LabItem, shift: float, rng: random.Random, sex: str) -> float:
    center = item.center
    if sex == "F" and item.key in ("hemoglobin", "hematocrit"):
        center *= 0.91
    if sex == "F" and item.key == "creatinine":
        center *= 0.85
    z = shift + rng.gauss(0, 1)
    if item.log_scale:
        value = center * math.exp(item.spread * max(-4.0, min(z, 14.0)))
    else:
        value = center + item.spread * max(-9.0, min(z, 9.0))
    return round(max(value, 10 ** -item.decimals if item.log_scale else 0.1), item.decimals)


def _lab_shifts(patient: Patient, principal: dict, acuity: float) -> dict[str, float]:
    shifts: dict[str, float] = {}
    conds = _data.clinical()["conditions"]
    for key in patient.conditions:
        for lab, s in (conds[key].get("labs") or {}).items():
            shifts[lab] = shifts.get(lab, 0.0) + s
    for lab, s in (principal.get("labs") or {}).items():
        shifts[lab] = shifts.get(lab, 0.0) + s
    # a sicker stay is sicker in its labs too: kidneys, albumin, lactate, white count
    for lab, direction in (("creatinine", 1), ("albumin", -1), ("lactate", 1), ("wbc", 1), ("bun", 1)):
        shifts[lab] = shifts.get(lab, 0.0) + 0.6 * direction * max(acuity, -0.5)
    return shifts


CHEM = ("sodium", "potassium", "chloride", "bicarbonate", "bun", "creatinine", "glucose")
CBC = ("wbc", "hemoglobin", "hematocrit", "platelets")


def _draw_labs(rng: random.Random, patient: Patient, principal_key: str, principal: dict, acuity: float,
               los_hours: float) -> tuple[list[LabDraw], dict[str, float], dict[str, float]]:
    items = _data.lab_items()
    shifts = _lab_shifts(patient, principal, acuity)
    extras = ["albumin", "inr"]
    if principal_key in ("sepsis", "pna", "sbo", "pancreatitis", "dka", "gib") or acuity > 1.0:
        extras.append("lactate")
    if principal_key in ("chf_exac", "nstemi", "chest_pain", "pe", "afib_rvr") or "chf" in patient.conditions:
        extras.append("ntprobnp")
    if principal_key in ("nstemi", "chest_pain", "pe", "afib_rvr", "chf_exac", "syncope", "stroke"):
        extras.append("troponin_t")
    if principal_key in ("hepatic_enceph", "gib", "pancreatitis", "cholecystitis", "sepsis") or "cirrhosis" in patient.conditions:
        extras.append("bilirubin")
    draws: list[LabDraw] = []
    n_draws = max(1, min(8, int(los_hours // 24) + 1))
    times = [rng.uniform(0.3, 2.0)] + [rng.uniform(0, 150) for _ in range(n_draws - 1)]
    admission: dict[str, float] = {}
    last: dict[str, float] = {}
    for i, hours in enumerate(times):
        recovery = 0.72 ** i  # labs drift back toward the patient's baseline as the stay goes on
        keys = list(CHEM + CBC) + (extras if i == 0 else [])
        if i > 0 and "lactate" in extras and i == 1:
            keys.append("lactate")
        if i > 0 and "troponin_t" in extras and i == 1:
            keys.append("troponin_t")
        values: dict[str, float] = {}
        for key in keys:
            shift = shifts.get(key, 0.0)
            if key in ("creatinine", "bun") and any(c in patient.conditions for c in ("ckd", "esrd")):
                # chronic kidney disease does not recover during a stay; only the acute part does
                chronic = sum(_data.clinical()["conditions"][c]["labs"].get(key, 0) for c in ("ckd", "esrd")
                              if c in patient.conditions)
                shift = chronic + (shift - chronic) * recovery
            else:
                shift *= recovery
            values[key] = _lab_value(items[key], shift, rng, patient.sex)
        if "hemoglobin" in values:
            values["hematocrit"] = round(values["hemoglobin"] * rng.uniform(2.85, 3.15), 1)
        if "sodium" in values:
            values["chloride"] = round(values["chloride"] + 0.5 * (values["sodium"] - 139))
            values["anion_gap"] = float(max(4, round(values["sodium"] - values["chloride"] - values["bicarbonate"]
                                                     + (shifts.get("anion_gap", 0) * recovery * 2))))
        priority = "STAT" if i == 0 else rng.choice(("ROUTINE", "ROUTINE", "STAT", ""))
        for key, value in values.items():
            draws.append(LabDraw(i, hours, key, value, priority))
        if i == 0:
            admission = dict(values)
        last.update(values)
    return draws, admission, last


# Chronic conditions that raise 30-day readmission beyond their Charlson weight (logit points): heart and
# lung failure decompensate, cirrhosis and kidney failure bring complications back, and substance use and
# mental illness make follow-up and adherence harder. Charlson (so LACE) gives most of them 0 or 1.
READMISSION_CONDITIONS = {"chf": 0.7, "copd": 0.5, "cirrhosis": 0.6, "ckd": 0.35, "esrd": 0.6, "alcohol": 0.75,
                          "opioid": 0.9, "psychosis": 0.75, "depression": 0.45, "dementia": 0.4}


def readmission_logit(*, age: int, charlson: int, los_days: float, emergency: bool, n_prior: int,
                      conditions: dict[str, int], admission_labs: dict[str, float],
                      discharge_labs: dict[str, float], n_drugs: int, disposition: str) -> float:
    """Log-odds of a readmission within 30 days, from what is known at discharge.

    LACE's own inputs (length of stay, acute admission, Charlson, prior emergency visits) carry a modest
    part of the risk; most comes from factors LACE does not see, as in published readmission models:
    labs still abnormal at discharge (the last values; risk grows with the distance outside the normal
    range), low albumin, specific comorbidities, the number of drugs, age, prior admissions (the stays so
    far in the simulated window, i.e. within about a year) and an unsafe disposition. A model with those
    features can therefore beat LACE legitimately.
    """
    albumin = admission_labs.get("albumin", 4.0)  # charted on arrival only, so also the last value
    creatinine = discharge_labs.get("creatinine", 1.0) if "esrd" not in conditions else 1.0
    sodium = discharge_labs.get("sodium", 139.0)
    hemoglobin = discharge_labs.get("hemoglobin", 13.0)
    labs = (1.2 * max(0.0, 3.6 - albumin) + 0.6 * max(0.0, min(creatinine, 5.0) - 1.2)
            + 0.15 * max(0.0, 137.0 - sodium) + 0.4 * max(0.0, 11.5 - hemoglobin))
    lace_part = 0.04 * charlson + 0.015 * min(los_days, 15) + 0.1 * emergency
    beyond_lace = (0.03 * (age - 65) + 0.2 * min(n_prior, 4) + labs + 0.13 * (n_drugs - 9)
                   + sum(w for c, w in READMISSION_CONDITIONS.items() if c in conditions)
                   + 0.3 * (disposition in ("SKILLED NURSING FACILITY", "CHRONIC/LONG TERM ACUTE CARE"))
                   + 0.8 * (disposition == "AGAINST ADVICE"))
    return -3.2 + lace_part + beyond_lace


def make_stay(rng: random.Random, patient: Patient, n_prior: int, on_day: date) -> Stay:
    """One hospital stay: principal problem, type, length, labs, drugs and outcome probabilities."""
    spec = _data.clinical()
    key = _choose_principal(rng, patient)
    principal = spec["principals"][key]
    if principal.get("gives") and principal["gives"] not in patient.conditions:
        given = principal["gives"]
        patient.conditions[given] = rng.randrange(len(spec["conditions"][given]["variants"]))
        patient.home_drugs[given] = _pick_drugs(rng, spec["conditions"][given].get("drugs", []), 1)
    variants = principal["variants"]
    allowed = [i for i, v in enumerate(variants) if not v.get("requires") or v["requires"] in patient.conditions]
    if key == "chf_exac" and "chf" in patient.conditions:
        variant = patient.conditions["chf"] % len(variants)  # systolic/diastolic as the chronic diagnosis
    else:
        variant = rng.choice(allowed)
    age = patient.age_on(on_day)
    charlson = patient.charlson()
    admission_type = _weighted(rng, ADMISSION_TYPES[principal["kind"]])
    acuity = rng.gauss(0, 1) + 0.15 * charlson - 0.2
    los_days = float(principal["los"]) * math.exp(0.35 * rng.gauss(0, 1) + 0.22 * acuity + 0.004 * (age - 65))
    los_hours = max(5.0, min(los_days, 60.0) * 24.0)
    labs, adm, last = _draw_labs(rng, patient, key, principal, acuity, los_hours)

    home = [d for ds in patient.home_drugs.values() for d in ds]
    home = list(dict.fromkeys(home))
    inpatient = _pick_drugs(rng, principal.get("drugs", []), rng.randint(2, 4))
    inpatient.append("enoxaparin" if key in ("hip_fx", "tkr") else ("heparin_sc" if key != "gib" else "pantoprazole_iv"))
    for extra, p in (("acetaminophen", 0.7), ("senna", 0.5), ("docusate", 0.4), ("ondansetron", 0.25), ("peg", 0.2)):
        if rng.random() < p:
            inpatient.append(extra)
    inpatient = list(dict.fromkeys(d for d in inpatient if d not in home))
    drug_rows = _data.drugs()
    new_home = [d for d in inpatient if drug_rows[d].home and drug_rows[d].row["indications"] and rng.random() < 0.6]
    held = [d for d in home if rng.random() < 0.08]
    discharge = [d for d in home if d not in held] + new_home

    lab_problems = []
    for rule in spec["lab_problems"]:
        value = adm.get(rule["lab"])
        if value is None or any(c in patient.conditions for c in rule.get("unless", [])):
            continue
        hit = value > rule["value"] if rule["op"] == "gt" else value < rule["value"]
        if hit and rng.random() < rule["prob"] and rule["concept"] != principal["variants"][variant]["concept"]:
            lab_problems.append(rule)

    albumin_low = adm.get("albumin", 4.0) < 3.0
    creat_high = adm.get("creatinine", 1.0) > 2.0 and "esrd" not in patient.conditions
    na_low = adm.get("sodium", 140) < 133
    hgb_low = adm.get("hemoglobin", 13) < 9.0
    lactate_high = adm.get("lactate", 1.0) > 4.0
    emergency = admission_type in EMERGENCY_TYPES

    dispo_logit = -2.2 + 0.05 * (age - 65) + 0.25 * charlson + 0.5 * acuity + (0.8 if key in ("hip_fx", "stroke") else 0)
    if rng.random() < _logistic(dispo_logit):
        disposition = rng.choices(DISPOSITIONS[2:6], weights=(0.55, 0.25, 0.1 + 0.1 * ("metastatic" in patient.conditions), 0.1))[0]
    else:
        disposition = rng.choices((*DISPOSITIONS[:2], DISPOSITIONS[6]), weights=(0.65, 0.33, 0.02))[0]
    facility = disposition in ("SKILLED NURSING FACILITY", "CHRONIC/LONG TERM ACUTE CARE")

    x_readmit = readmission_logit(
        age=age, charlson=charlson, los_days=los_days, emergency=emergency, n_prior=n_prior,
        conditions=patient.conditions, admission_labs=adm, discharge_labs=last,
        n_drugs=len(home) + len(inpatient), disposition=disposition,
    )
    x_hospital = (-5.7 + 0.035 * (age - 65) + 0.2 * charlson + float(principal.get("severity", 0))
                  + 1.0 * lactate_high + 0.8 * albumin_low + 0.5 * creat_high + 0.35 * max(acuity, 0))
    x_year = (-3.9 + 0.035 * (age - 65) + 0.27 * charlson + 0.8 * albumin_low + 0.5 * creat_high
              + 0.35 * na_low + 0.45 * hgb_low + 0.18 * min(n_prior, 5) + 2.2 * (disposition == "HOSPICE")
              + 0.3 * facility)
    ed_hours = None
    if rng.random() < ED_TYPES.get(admission_type, 0.0):
        ed_hours = rng.uniform(2.0, 14.0)
    return Stay(
        principal=key, variant=variant, admission_type=admission_type, los_hours=los_hours, acuity=acuity,
        n_prior=n_prior, age=age, conditions=dict(patient.conditions), labs=labs, admission_labs=adm,
        discharge_labs=last, home_drugs=home, inpatient_drugs=inpatient, discharge_drugs=discharge,
        lab_problems=lab_problems, disposition=disposition, p_readmit=_logistic(x_readmit),
        p_death_hospital=_logistic(x_hospital), p_death_year=_logistic(x_year), ed_hours=ed_hours,
    )


def coded_diagnoses(stay: Stay, icd_version: int, rng: random.Random) -> list[tuple[str, str]]:
    """(icd_code, concept) in sequence order: principal, lab-driven problems, chronic conditions, status codes."""
    spec = _data.clinical()
    col = "icd9" if icd_version == 9 else "icd10"
    out: list[tuple[str, str]] = [(stay.principal_variant[col], stay.principal_variant["concept"])]
    for rule in stay.lab_problems:
        out.append((rule[col], rule["concept"]))
    superseded = {spec["conditions"][c].get("supersedes") for c in stay.conditions}
    for cond, variant in stay.conditions.items():
        if cond in superseded:
            continue
        variants = spec["conditions"][cond]["variants"]
        v = variants[variant % len(variants)]
        out.append((v[col], v["concept"]))
    status = []
    if "apixaban" in stay.home_drugs or "warfarin" in stay.home_drugs:
        status.append(("V5861", "Z7901"))
    if "insulin_glargine" in stay.home_drugs:
        status.append(("V5867", "Z794"))
    if "esrd" in stay.conditions:
        status.append(("V4511", "Z992"))
    if stay.disposition == "HOSPICE" or (stay.age > 85 and rng.random() < 0.3):
        status.append(("V4986", "Z66"))
    if stay.principal == "hip_fx":
        status.append(("E8859", "W19XXXA"))
        status.append(("E8490", "Y929"))
    for icd9, icd10 in status:
        out.append((icd9 if icd_version == 9 else icd10, ""))
    seen: set[str] = set()
    unique = []
    for code, concept in out:
        if code not in seen:
            seen.add(code)
            unique.append((code, concept))
    return unique
