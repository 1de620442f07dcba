"""Write a synthetic MIMIC-IV or MIMIC-III style source folder, streamed patient by patient.

Time line: discharges fall on days in [start - history_days, start + days - 1] (the window). Demo days
are ordinary days of it: every patient's first discharge is drawn over the whole window, leaning early
(`_first_discharge`), and the patient is simulated forward: after each discharge the patient may die (in
hospital or within a year), be readmitted within 30 days, or come back later; the chain stops at death or
with the first admission after the window. The early lean makes up for readmissions, which pile up later
in the window, so the expected discharges per day are about the same on every day, history and demo days
alike (a nightly backfill followed by the demo days does not trip the volume check). A stay admitted
inside the window may end after it: it is still open at the end of the window, as in a live hospital,
so labs by charttime do not thin out over the last days.

`messy=True` plants a few realistic defects for validation and reconciliation tests (see `_Writer`).
`shift_day` plants a shift in the admission mix on one day, for drift checks (see `_Writer`).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.synth import _data, clinical, notes

Layout = Literal["mimic4", "mimic3"]
ProgressFn = Callable[[int, int], None]

CHUNK_PATIENTS = 100
MAX_STAYS = 40
TS = "%Y-%m-%d %H:%M:%S"

GOLD_SCHEMA = pa.schema([
    ("note_id", pa.string()), ("start_char", pa.int32()), ("end_char", pa.int32()), ("label", pa.string()),
    ("text", pa.string()), ("is_negated", pa.bool_()), ("is_uncertain", pa.bool_()),
    ("is_historical", pa.bool_()), ("is_family", pa.bool_()), ("is_hypothetical", pa.bool_()),
    ("section", pa.string()), ("template_id", pa.string()), ("term", pa.string()),
])

MIMIC4_COLUMNS = {
    "patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    "admissions": ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
                   "admit_provider_id", "admission_location", "discharge_location", "insurance", "language",
                   "marital_status", "race", "edregtime", "edouttime", "hospital_expire_flag"],
    "diagnoses": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    "d_icd_diagnoses": ["icd_code", "icd_version", "long_title"],
    "labs": ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "charttime", "storetime", "value",
             "valuenum", "valueuom", "ref_range_lower", "ref_range_upper", "flag", "priority", "comments"],
    "d_labitems": ["itemid", "label", "fluid", "category"],
    "prescriptions": ["subject_id", "hadm_id", "pharmacy_id", "poe_id", "poe_seq", "order_provider_id",
                      "starttime", "stoptime", "drug_type", "drug", "formulary_drug_cd", "gsn", "ndc",
                      "prod_strength", "form_rx", "dose_val_rx", "dose_unit_rx", "form_val_disp",
                      "form_unit_disp", "doses_per_24_hrs", "route"],
    "notes": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"],
    "radiology": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"],
    "procedures": ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"],
    "d_icd_procedures": ["icd_code", "icd_version", "long_title"],
    "icu_stays": ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los"],
}
MIMIC4_FILES = {
    "patients": "hosp/patients.csv.gz", "admissions": "hosp/admissions.csv.gz",
    "diagnoses": "hosp/diagnoses_icd.csv.gz", "d_icd_diagnoses": "hosp/d_icd_diagnoses.csv.gz",
    "labs": "hosp/labevents.csv.gz", "d_labitems": "hosp/d_labitems.csv.gz",
    "prescriptions": "hosp/prescriptions.csv.gz", "notes": "note/discharge.csv.gz",
    "radiology": "note/radiology.csv.gz", "procedures": "hosp/procedures_icd.csv.gz",
    "d_icd_procedures": "hosp/d_icd_procedures.csv.gz", "icu_stays": "icu/icustays.csv.gz",
}
MIMIC3_COLUMNS = {
    "patients": ["ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"],
    "admissions": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE",
                   "ADMISSION_LOCATION", "DISCHARGE_LOCATION", "INSURANCE", "LANGUAGE", "RELIGION",
                   "MARITAL_STATUS", "ETHNICITY", "EDREGTIME", "EDOUTTIME", "DIAGNOSIS", "HOSPITAL_EXPIRE_FLAG",
                   "HAS_CHARTEVENTS_DATA"],
    "diagnoses": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
    "d_icd_diagnoses": ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"],
    "labs": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUENUM", "VALUEUOM", "FLAG"],
    "d_labitems": ["ROW_ID", "ITEMID", "LABEL", "FLUID", "CATEGORY", "LOINC_CODE"],
    "prescriptions": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "STARTDATE", "ENDDATE", "DRUG_TYPE", "DRUG",
                      "DRUG_NAME_POE", "DRUG_NAME_GENERIC", "FORMULARY_DRUG_CD", "GSN", "NDC", "PROD_STRENGTH",
                      "DOSE_VAL_RX", "DOSE_UNIT_RX", "FORM_VAL_DISP", "FORM_UNIT_DISP", "ROUTE"],
    "notes": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY", "DESCRIPTION",
              "CGID", "ISERROR", "TEXT"],
    "procedures": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
    "d_icd_procedures": ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"],
    "icu_stays": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "DBSOURCE", "FIRST_CAREUNIT", "LAST_CAREUNIT",
                  "FIRST_WARDID", "LAST_WARDID", "INTIME", "OUTTIME", "LOS"],
}
MIMIC3_FILES = {
    "patients": "PATIENTS.csv", "admissions": "ADMISSIONS.csv", "diagnoses": "DIAGNOSES_ICD.csv",
    "d_icd_diagnoses": "D_ICD_DIAGNOSES.csv", "labs": "LABEVENTS.csv", "d_labitems": "D_LABITEMS.csv",
    "prescriptions": "PRESCRIPTIONS.csv", "notes": "NOTEEVENTS.csv", "procedures": "PROCEDURES_ICD.csv",
    "d_icd_procedures": "D_ICD_PROCEDURES.csv", "icu_stays": "ICUSTAYS.csv",
}
#: the release module each generated file belongs to (hosp is always written)
MODULES = ("hosp", "icu", "note")
_FILE_MODULE = {"notes": "note", "radiology": "note", "icu_stays": "icu"}

# Real shapes the generator draws on (their own random stream, so the rest of the dataset is unchanged):
# procedure codes (ICD-9-CM volume 3 without the dot / ICD-10-PCS) with their titles,
_PROCEDURES = {
    9: [("3893", "Venous catheterization, not elsewhere classified"), ("9904", "Transfusion of packed cells"),
        ("3995", "Hemodialysis"), ("8872", "Diagnostic ultrasound of heart"),
        ("9671", "Continuous invasive mechanical ventilation for less than 96 consecutive hours"),
        ("4513", "Other endoscopy of small intestine")],
    10: [("02HV33Z", "Insertion of Infusion Device into Superior Vena Cava, Percutaneous Approach"),
         ("30233N1", "Transfusion of Nonautologous Red Blood Cells into Peripheral Vein, Percutaneous Approach"),
         ("5A1D70Z", "Performance of Urinary Filtration, Intermittent, Less than 6 Hours Per Day"),
         ("B246ZZZ", "Ultrasonography of Right and Left Heart"),
         ("5A1935Z", "Respiratory Ventilation, Less than 24 Consecutive Hours"),
         ("0DJ08ZZ", "Inspection of Upper Intestinal Tract, Via Natural or Artificial Opening Endoscopic")],
}
# the diluent an IV order is mixed in: a BASE component sharing the order's pharmacy_id, as MIMIC-IV writes it,
_BASES = [("0.9% Sodium Chloride", "00338004904", "100mL Bag", "100", "mL"),
          ("5% Dextrose", "00338001702", "250mL Bag", "250", "mL")]
# and ICU care units.
_CAREUNITS = ["Medical Intensive Care Unit (MICU)", "Surgical Intensive Care Unit (SICU)",
              "Cardiac Vascular Intensive Care Unit (CVICU)", "Coronary Care Unit (CCU)"]
_RADIOLOGY = ("EXAMINATION:  CHEST (PA AND LAT)\n\nINDICATION:  ___ with {reason}\n\nTECHNIQUE:  Chest PA and lateral\n\n"
              "FINDINGS:\n\n{finding}\n\nIMPRESSION:\n\n{impression}\n")
_RADIOLOGY_READS = [
    ("shortness of breath", "Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.",
     "No acute cardiopulmonary process."),
    ("cough and fever", "Patchy opacity in the right lower lobe. No pleural effusion.",
     "Right lower lobe opacity concerning for pneumonia."),
    ("edema", "Moderate cardiomegaly with mild pulmonary vascular congestion. Small bilateral effusions.",
     "Mild pulmonary edema and small bilateral pleural effusions."),
]
GOLD_FILE = "gold/note_entities.parquet"

_MIMIC3_TYPE = {"ELECTIVE": "ELECTIVE", "SURGICAL SAME DAY ADMISSION": "ELECTIVE", "URGENT": "URGENT"}
_MIMIC3_DISCHARGE = {"HOME": "HOME", "HOME HEALTH CARE": "HOME HEALTH CARE", "SKILLED NURSING FACILITY": "SNF",
                     "REHAB": "REHAB/DISTINCT PART HOSP", "HOSPICE": "HOSPICE-HOME", "DIED": "DEAD/EXPIRED",
                     "CHRONIC/LONG TERM ACUTE CARE": "LONG TERM CARE HOSPITAL",
                     "AGAINST ADVICE": "LEFT AGAINST MEDICAL ADVI"}
_MIMIC3_ADMIT_LOC = {"EMERGENCY ROOM": "EMERGENCY ROOM ADMIT", "PHYSICIAN REFERRAL": "PHYS REFERRAL/NORMAL DELI",
                     "TRANSFER FROM HOSPITAL": "TRANSFER FROM HOSP/EXTRAM", "CLINIC REFERRAL": "CLINIC REFERRAL/PREMATURE",
                     "WALK-IN/SELF REFERRAL": "EMERGENCY ROOM ADMIT",
                     "TRANSFER FROM SKILLED NURSING FACILITY": "TRANSFER FROM SKILLED NUR",
                     "PROCEDURE SITE": "PHYS REFERRAL/NORMAL DELI"}


@dataclass(frozen=True)
class GenerateSummary:
    path: Path
    layout: str
    start: date
    days: int
    history_days: int
    seed: int
    counts: dict[str, int]  # rows per table: patients, admissions, diagnoses, labs, prescriptions, notes, ...
    demo_discharges: dict[str, int] = field(default_factory=dict)  # demo day (ISO) -> admissions discharged

    @property
    def patients(self) -> int:
        return self.counts["patients"]

    @property
    def admissions(self) -> int:
        return self.counts["admissions"]

    @property
    def notes(self) -> int:
        return self.counts.get("notes", 0)


class _CsvSink:
    """A CSV file written row by row; gzip with mtime=0 so the bytes depend on content only."""

    def __init__(self, path: Path, header: list[str], gz: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = path.open("wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=6) if gz else None
        self._text = io.TextIOWrapper(self._gz or self._raw, encoding="utf-8", newline="")
        self._writer = csv.writer(self._text, lineterminator="\n")
        self._writer.writerow(header)
        self.rows = 0

    def write(self, row: list) -> None:
        self._writer.writerow(row)
        self.rows += 1

    def close(self) -> None:
        self._text.flush()
        self._text.detach()
        if self._gz:
            self._gz.close()
        self._raw.close()


def _fmt(ts: datetime | None) -> str:
    return ts.strftime(TS) if ts else ""


# Readmissions pile up as the window goes on (a patient's later stays follow the first), so first discharges
# lean early: a share drawn from an exponential decay with about a readmission cycle as time constant, the
# rest uniform. Tuned so that the expected discharges per day stay level (within ~15%) for windows of a month
# to two years; tests/synth/test_generate.py checks the spread.
_EARLY_SHARE = 0.6
_EARLY_DAYS = 90.0


def _first_discharge(rng: random.Random, window_start: date, window_days: int) -> date:
    """Day of a patient's first discharge in the window."""
    if rng.random() < _EARLY_SHARE:
        # inverse CDF of the exponential truncated to the window
        offset = -_EARLY_DAYS * math.log(1 - rng.random() * (1 - math.exp(-window_days / _EARLY_DAYS)))
    else:
        offset = rng.random() * window_days
    return window_start + timedelta(days=min(window_days - 1, int(offset)))


@dataclass(slots=True)
class _Placed:
    stay: clinical.Stay
    admit: datetime
    disch: datetime
    death: datetime | None = None


def _clock(day: date, rng: random.Random, lo: float, hi: float) -> datetime:
    return datetime.combine(day, time()) + timedelta(minutes=round(rng.uniform(lo, hi) * 60))


def _simulate(rng: random.Random, patient: clinical.Patient, first: date, last_day: date) -> tuple[list[_Placed], date | None]:
    """Place the patient's stays on the calendar and draw outcomes; returns stays and date of death."""
    placed: list[_Placed] = []
    stay = clinical.make_stay(rng, patient, 0, first)
    disch = _clock(first, rng, 10, 19)
    current = _Placed(stay, disch - timedelta(hours=stay.los_hours), disch)
    dod: date | None = None
    while True:
        stay = current.stay
        if rng.random() < stay.p_death_hospital:
            # died on the planned discharge day
            death = max(current.admit + (current.disch - current.admit) * rng.uniform(0.5, 1.0),
                        datetime.combine(current.disch.date(), time(0, 5)))
            death = death.replace(microsecond=0)
            current.death = death
            current.disch = death
            placed.append(current)
            dod = death.date()
            break
        placed.append(current)
        if rng.random() < stay.p_death_year:
            dod = current.disch.date() + timedelta(days=1 + min(363, int(rng.expovariate(1 / 110))))
        gap_days = rng.uniform(1, 29.5) if rng.random() < stay.p_readmit else 30 + rng.expovariate(1 / 160)
        next_admit_day = (current.disch + timedelta(days=gap_days)).date()
        if (dod and next_admit_day >= dod) or len(placed) >= MAX_STAYS or next_admit_day > last_day:
            break
        nxt = clinical.make_stay(rng, patient, len(placed), next_admit_day)
        admit = _clock(next_admit_day, rng, 0, 24) if nxt.emergency else _clock(next_admit_day, rng, 6, 10)
        # admitted inside the window: kept even when the discharge falls after it (still open at its end)
        current = _Placed(nxt, admit, admit + timedelta(hours=nxt.los_hours))
    return placed, dod


def generate(out: Path, *, layout: Layout = "mimic4", patients: int = 500, start: date, days: int = 3,
             history_days: int = 365, seed: int = 7, progress: ProgressFn | None = None, messy: bool = False,
             icd10_cutover: date | None = None, shift_day: date | None = None,
             shift_emergency_share: float = 0.4, modules: tuple[str, ...] = MODULES,
             radiology: bool = False) -> GenerateSummary:
    """Write a synthetic source folder under `out` and return what was written.

    `modules`: which release modules to write, like a real install has them: ``hosp`` (always), ``icu``
    (icustays) and ``note`` (MIMIC-IV-Note: discharge summaries, and radiology reports with `radiology`).
    ``("hosp",)`` is a hosp-only source like the open MIMIC-IV demo. Every source gets procedures (with
    their d_icd_procedures titles) and multi-component IV orders (a MAIN and a BASE row sharing one
    pharmacy_id), drawn from their own random stream so the rest of the dataset is the same as before.

    `icd10_cutover` (MIMIC-IV only): admissions from this date are coded in ICD-10-CM, earlier ones in
    ICD-9-CM; default is the middle of the history window so both versions appear. `messy` plants a few
    realistic defects (see `_Writer`). `shift_day`: the admissions discharged that day are emergencies
    with probability `shift_emergency_share` instead of the usual ~0.87 (see `_Writer`).
    """
    if not 0 <= shift_emergency_share <= 1:
        raise ValueError(f"E-SYN022 shift_emergency_share must be in [0, 1], got {shift_emergency_share}")
    if layout not in ("mimic4", "mimic3"):
        raise ValueError(f"E-SYN020 layout must be 'mimic4' or 'mimic3', got {layout!r}")
    if isinstance(start, str):
        start = date.fromisoformat(start)
    if patients < 1 or days < 1 or history_days < 0:
        raise ValueError("E-SYN021 need patients >= 1, days >= 1 and history_days >= 0")
    unknown = sorted(set(modules) - set(MODULES))
    if unknown or "hosp" not in modules:
        raise ValueError(f"E-SYN023 modules must include hosp and be among {', '.join(MODULES)}, got {list(modules)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    history_start = start - timedelta(days=history_days)
    last_day = start + timedelta(days=days - 1)
    cutover = icd10_cutover or (start - timedelta(days=history_days // 2))
    writer = _Writer(out, layout, seed, messy=messy, shift_day=shift_day, shift_emergency_share=shift_emergency_share,
                     modules=modules, radiology=radiology)
    composer = notes.NoteComposer(seed=seed, split="all")
    demo_counts = {(start + timedelta(days=d)).isoformat(): 0 for d in range(days)}
    try:
        writer.write_dictionaries()
        for index in range(patients):
            rng = random.Random(f"ehr-synth-v2:{seed}:{index}")
            subject_id = 10_000_032 + index * 7
            patient = clinical.make_patient(rng, index, subject_id, start)
            first = _first_discharge(rng, history_start, history_days + days)
            placed, dod = _simulate(rng, patient, first, last_day)
            for p in placed:
                key = p.disch.date().isoformat()
                if key in demo_counts:
                    demo_counts[key] += 1
            writer.write_patient(rng, patient, placed, dod, cutover, composer)
            if (index + 1) % CHUNK_PATIENTS == 0 or index + 1 == patients:
                writer.flush_gold()  # fixed chunking keeps memory bounded and the parquet bytes reproducible
                if progress:
                    progress(index + 1, patients)
        if messy:
            writer.plant_defects()
    finally:
        counts = writer.close()
    return GenerateSummary(out, layout, start, days, history_days, seed, counts, demo_counts)


class _Writer:
    """Writes the CSV files; with ``messy`` it also plants defects a real extract has, drawn from their own
    random stream so the clean rows are the same with or without them:

    - a few admissions with a spreadsheet-mangled ``dischtime`` (``1/2/26 14:05``), dated by their note;
    - a lab with a mangled ``charttime``, no ``storetime`` and no admission: nothing can date it;
    - a lab whose ``labevent_id`` has 20 digits (too large for any integer column);
    - a lab and a diagnosis of an admission that is not in the source, a lab with no charttime and an
      impossible value (see :meth:`plant_defects`).

    With ``shift_day`` it plants a shift in the admission mix instead, as a drift check should see it: each
    admission discharged that day is an emergency with probability ``shift_emergency_share`` (drawn from
    its own random stream); an emergency drawn as not is written as ELECTIVE (no ED stay), and the
    reverse as EW EMER. Everything else about the stay is unchanged.
    """

    MANGLED_ADMISSIONS = 3

    def __init__(self, out: Path, layout: str, seed: int, *, messy: bool = False, shift_day: date | None = None,
                 shift_emergency_share: float = 0.4, modules: tuple[str, ...] = MODULES,
                 radiology: bool = False) -> None:
        self.seed = seed
        self.notes_on = "note" in modules
        self.icu_on = "icu" in modules
        self.radiology = radiology and self.notes_on
        self.messy = messy
        self.shift_day = shift_day
        self.shift_emergency_share = shift_emergency_share
        self.shift_rng = random.Random(f"shift:{seed}")
        self.mangled_admissions = 0
        self.layout = layout
        self.out = out
        gz = layout == "mimic4"
        files = MIMIC4_FILES if gz else MIMIC3_FILES
        columns = MIMIC4_COLUMNS if gz else MIMIC3_COLUMNS
        wanted = [t for t in files if _FILE_MODULE.get(t, "hosp") in modules
                  and (t != "radiology" or self.radiology)]
        self.sinks = {t: _CsvSink(out / files[t], columns[t], gz) for t in wanted}
        (out / GOLD_FILE).parent.mkdir(parents=True, exist_ok=True)
        self.gold = pq.ParquetWriter(out / GOLD_FILE, GOLD_SCHEMA, compression="zstd")
        self.gold_rows: dict[str, list] = {f.name: [] for f in GOLD_SCHEMA}
        self.gold_count = 0
        self.labevent_id = 0
        self.pharmacy_id = 0
        self.defect_rng = random.Random(f"defects:{seed}")
        self.defect_candidates: list[tuple] = []

    # --- dictionaries ---------------------------------------------------------------------------
    def write_dictionaries(self) -> None:
        procedures = self.sinks["d_icd_procedures"]
        for version, codes in _PROCEDURES.items():
            if self.layout == "mimic4":
                for code, title in codes:
                    procedures.write([code, version, title])
            elif version == 9:
                for code, title in codes:
                    procedures.write([procedures.rows + 1, code, _short_title(title), title])
        icd = self.sinks["d_icd_diagnoses"]
        labs = self.sinks["d_labitems"]
        if self.layout == "mimic4":
            for code, version, title in _data.icd_dictionary():
                icd.write([code, version, title])
            for item in sorted(_data.lab_items().values(), key=lambda i: i.itemid):
                labs.write([item.itemid, item.label, item.fluid, item.category])
        else:
            row = 0
            for code, version, title in _data.icd_dictionary():
                if version == 9:
                    row += 1
                    icd.write([row, code, _short_title(title), title])
            for i, item in enumerate(sorted(_data.lab_items().values(), key=lambda i: i.itemid), 1):
                labs.write([i, item.itemid, item.label, item.fluid, item.category, item.loinc_code])

    # --- one patient ----------------------------------------------------------------------------
    def write_patient(self, rng: random.Random, patient: clinical.Patient, placed: list[_Placed], dod: date | None,
                      cutover: date, composer: notes.NoteComposer) -> None:
        m4 = self.layout == "mimic4"
        first_admit = placed[0].admit.date()
        died_in_hospital = any(p.death for p in placed)
        if m4:
            anchor_year = first_admit.year
            anchor_age = min(91, anchor_year - patient.birth_date.year)
            y0 = 2008 + 3 * ((anchor_year - 2008) // 3)
            self.sinks["patients"].write([patient.subject_id, patient.sex, anchor_age, anchor_year,
                                          f"{y0} - {y0 + 2}", dod.isoformat() if dod else ""])
        else:
            dod_s = f"{dod.isoformat()} 00:00:00" if dod else ""
            self.sinks["patients"].write([
                self.sinks["patients"].rows + 1, patient.subject_id, patient.sex,
                f"{patient.birth_date.isoformat()} 00:00:00", dod_s, dod_s if died_in_hospital else "",
                dod_s if dod and not died_in_hospital else "", 1 if dod else 0,
            ])
        poe_seq = 0
        for j, p in enumerate(placed):
            stay = p.stay
            hadm_id = 20_000_000 + patient.index * MAX_STAYS + j
            version = 9 if (not m4 or p.admit.date() < cutover) else 10
            self._admission(rng, patient, p, hadm_id)
            for seq, (code, _) in enumerate(clinical.coded_diagnoses(stay, version, rng), 1):
                if m4:
                    self.sinks["diagnoses"].write([patient.subject_id, hadm_id, seq, code, version])
                else:
                    self.sinks["diagnoses"].write([self.sinks["diagnoses"].rows + 1, patient.subject_id, hadm_id,
                                                   seq, code])
            self._labs(rng, patient, p, hadm_id)
            extra = random.Random(f"ehr-synth-extra:{self.seed}:{hadm_id}")  # new shapes: their own stream
            poe_seq = self._prescriptions(rng, patient, p, hadm_id, poe_seq, extra)
            self._procedures(extra, patient, p, hadm_id, version)
            self._icu_stay(extra, patient, p, hadm_id)
            context = notes.context_from_stay(stay, patient.sex, rng, expired=p.death is not None)
            note = composer.compose(context, rng=rng)  # drawn even without the note module: same stream
            if self.notes_on:
                self._note(rng, patient, p, hadm_id, j + 1, note)
                if self.radiology:
                    self._radiology(extra, patient, p, hadm_id, j + 1)
            else:
                rng.uniform(1, 40)  # the draw _note makes (its storetime): later rows stay the same

    def _admission(self, rng: random.Random, patient: clinical.Patient, p: _Placed, hadm_id: int) -> None:
        stay = p.stay
        admission_type = stay.admission_type
        ed_reg = ed_out = None
        if stay.ed_hours is not None:
            ed_out = p.admit - timedelta(minutes=rng.randint(5, 90))
            ed_reg = ed_out - timedelta(hours=stay.ed_hours)
        if ed_reg is not None:
            location = "EMERGENCY ROOM"
        elif admission_type in ("ELECTIVE", "SURGICAL SAME DAY ADMISSION"):
            location = rng.choice(("PHYSICIAN REFERRAL", "PHYSICIAN REFERRAL", "PROCEDURE SITE", "CLINIC REFERRAL"))
        else:
            location = rng.choice(("PHYSICIAN REFERRAL", "TRANSFER FROM HOSPITAL", "WALK-IN/SELF REFERRAL",
                                   "TRANSFER FROM SKILLED NURSING FACILITY", "CLINIC REFERRAL"))
        if self.shift_day is not None and p.disch.date() == self.shift_day:
            # drawn from its own stream, never rng: the rest of the dataset is the same with or without the shift
            emergency = self.shift_rng.random() < self.shift_emergency_share
            if emergency != stay.emergency:
                admission_type = "EW EMER." if emergency else "ELECTIVE"
                if not emergency:
                    ed_reg = ed_out = None
                    location = "PHYSICIAN REFERRAL"
        discharge_location = "DIED" if p.death else stay.disposition
        age = stay.age
        if age >= 65:
            insurance = "Medicare" if rng.random() < 0.85 else "Other"
        else:
            insurance = rng.choices(("Private", "Medicaid", "Other"), weights=(0.55, 0.3, 0.15))[0]
        expire = 1 if p.death else 0
        dischtime = _fmt(p.disch)
        # every 29th admission (the first few): deterministic, so that even a small messy dataset has some
        if (self.messy and not p.death and self.mangled_admissions < self.MANGLED_ADMISSIONS
                and self.sinks["admissions"].rows % 29 == 3):
            dischtime = _spreadsheet(p.disch)
            self.mangled_admissions += 1
        if self.layout == "mimic4":
            self.sinks["admissions"].write([
                patient.subject_id, hadm_id, _fmt(p.admit), dischtime, _fmt(p.death), admission_type,
                f"P{rng.randrange(16**5):05X}", location, discharge_location, insurance, patient.language,
                patient.marital_status, patient.race, _fmt(ed_reg), _fmt(ed_out), expire,
            ])
        else:
            adm_type = _MIMIC3_TYPE.get(admission_type, "EMERGENCY")
            insurance3 = {"Other": rng.choice(("Government", "Self Pay", "Private"))}.get(insurance, insurance)
            diagnosis = _data.lexicon()[stay.principal_variant["concept"]].terms[0].surface.upper()
            self.sinks["admissions"].write([
                self.sinks["admissions"].rows + 1, patient.subject_id, hadm_id, _fmt(p.admit), dischtime,
                _fmt(p.death), adm_type, _MIMIC3_ADMIT_LOC[location], _MIMIC3_DISCHARGE[discharge_location],
                insurance3, "ENGL" if patient.language == "ENGLISH" else patient.language[:4].replace("?", ""),
                patient.religion, patient.marital_status,
                patient.race.replace("UNKNOWN", "UNKNOWN/NOT SPECIFIED"), _fmt(ed_reg), _fmt(ed_out), diagnosis,
                expire, 1,
            ])

    def _labs(self, rng: random.Random, patient: clinical.Patient, p: _Placed, hadm_id: int) -> None:
        items = _data.lab_items()
        sink = self.sinks["labs"]
        m4 = self.layout == "mimic4"
        specimen: dict[tuple[int, str], int] = {}
        for draw in p.stay.labs:
            if draw.draw == 0:
                charttime = p.admit + timedelta(hours=draw.hours)
            else:
                charttime = datetime.combine(p.admit.date() + timedelta(days=draw.draw), time(4, 30)) + timedelta(
                    minutes=round(draw.hours))
            charttime = charttime.replace(second=0, microsecond=0)
            if charttime <= p.admit or charttime >= p.disch:
                continue
            item = items[draw.key]
            value = f"{draw.value:.{item.decimals}f}"
            abnormal = draw.value < item.ref_lower or draw.value > item.ref_upper
            self.labevent_id += 1
            if m4:
                spec_key = (draw.draw, item.panel)
                if spec_key not in specimen:
                    specimen[spec_key] = rng.randrange(10_000_000, 99_999_999)
                storetime = charttime + timedelta(minutes=rng.randint(20, 95))
                sink.write([self.labevent_id, patient.subject_id, hadm_id, specimen[spec_key], item.itemid,
                            _fmt(charttime), _fmt(storetime), value, value, item.valueuom,
                            item.ref_lower, item.ref_upper, "abnormal" if abnormal else "", draw.priority, ""])
            else:
                sink.write([sink.rows + 1, patient.subject_id, hadm_id, item.itemid, _fmt(charttime), value, value,
                            item.valueuom, "abnormal" if abnormal else ""])
            if self.messy and len(self.defect_candidates) < 50 and self.defect_rng.random() < 0.01:
                self.defect_candidates.append((charttime, patient.subject_id, hadm_id))

    def _procedures(self, extra: random.Random, patient: clinical.Patient, p: _Placed, hadm_id: int,
                    version: int) -> None:
        """None to three billed procedures, performed during the stay."""
        sink = self.sinks["procedures"]
        count = extra.choices((0, 1, 2, 3), weights=(0.45, 0.3, 0.15, 0.1))[0]
        for seq, (code, _) in enumerate(extra.sample(_PROCEDURES[version], count), 1):
            day = p.admit.date() + timedelta(days=extra.randint(0, max(0, (p.disch.date() - p.admit.date()).days)))
            if self.layout == "mimic4":
                sink.write([patient.subject_id, hadm_id, seq, day.isoformat(), code, version])
            else:
                sink.write([sink.rows + 1, patient.subject_id, hadm_id, seq, code])

    def _icu_stay(self, extra: random.Random, patient: clinical.Patient, p: _Placed, hadm_id: int) -> None:
        """About one stay in four spends part of it in an ICU (drawn even without the icu module)."""
        icu = extra.random() < 0.25
        los = (p.disch - p.admit).total_seconds()
        intime = (p.admit + timedelta(seconds=extra.uniform(0, 0.3) * los)).replace(microsecond=0)
        outtime = min(p.disch, intime + timedelta(seconds=extra.uniform(0.2, 0.6) * los)).replace(microsecond=0)
        first, last = extra.choice(_CAREUNITS), extra.choice(_CAREUNITS)
        if not (icu and self.icu_on):
            return
        stay_id = 30_000_000 + (hadm_id - 20_000_000)
        days = f"{(outtime - intime).total_seconds() / 86400:.4f}"
        sink = self.sinks["icu_stays"]
        if self.layout == "mimic4":
            sink.write([patient.subject_id, hadm_id, stay_id, first, last, _fmt(intime), _fmt(outtime), days])
        else:
            sink.write([sink.rows + 1, patient.subject_id, hadm_id, stay_id, "metavision", first[-5:-1], last[-5:-1],
                        "", "", _fmt(intime), _fmt(outtime), days])

    def _radiology(self, extra: random.Random, patient: clinical.Patient, p: _Placed, hadm_id: int,
                   seq: int) -> None:
        """A chest radiograph report charted during the stay (MIMIC-IV-Note note_type RR)."""
        reason, finding, impression = extra.choice(_RADIOLOGY_READS)
        text = _RADIOLOGY.format(reason=reason, finding=finding, impression=impression)
        charttime = (p.admit + (p.disch - p.admit) * extra.uniform(0.05, 0.5)).replace(microsecond=0)
        storetime = charttime + timedelta(minutes=extra.randint(20, 240))
        if self.layout == "mimic4":
            self.sinks["radiology"].write([f"{patient.subject_id}-RR-{seq}", patient.subject_id, hadm_id, "RR", seq,
                                           _fmt(charttime), _fmt(storetime), text])
        else:
            self.sinks["notes"].write([self.sinks["notes"].rows + 1, patient.subject_id, hadm_id,
                                       charttime.date().isoformat(), _fmt(charttime), _fmt(storetime), "Radiology",
                                       "CHEST (PA & LAT)", "", "", text])

    def _prescriptions(self, rng: random.Random, patient: clinical.Patient, p: _Placed, hadm_id: int,
                       poe_seq: int, extra: random.Random | None = None) -> int:
        stay = p.stay
        drugs = _data.drugs()
        sink = self.sinks["prescriptions"]
        orders = [(k, True) for k in stay.home_drugs] + [(k, False) for k in stay.inpatient_drugs]
        los = (p.disch - p.admit).total_seconds() / 3600
        for key, continued in orders:
            row = drugs[key].row
            start = p.admit + timedelta(hours=rng.uniform(0.5, min(8.0, los * 0.5)))
            stop = p.disch if continued or rng.random() < 0.5 else start + timedelta(
                hours=rng.uniform(1.0, max(1.5, (p.disch - start).total_seconds() / 3600)))
            stop = min(stop, p.disch)
            start, stop = start.replace(second=0, microsecond=0), stop.replace(second=0, microsecond=0)
            poe_seq += 1
            self.pharmacy_id += 1
            if self.layout == "mimic4":
                sink.write([patient.subject_id, hadm_id, self.pharmacy_id, f"{patient.subject_id}-{poe_seq}", poe_seq,
                            f"P{rng.randrange(16**5):05X}", _fmt(start), _fmt(stop), "MAIN", row["drug"],
                            row["formulary_drug_cd"], row["gsn"], row["ndc"], row["prod_strength"], row["form_rx"],
                            row["dose_val_rx"], row["dose_unit_rx"], row["form_val_disp"], row["form_unit_disp"],
                            row["doses_per_24_hrs"], row["route"]])
                base = self._base(extra, row)
                if base is not None:  # the diluent: a BASE component of the same order (same pharmacy_id)
                    drug, ndc, strength, dose, unit = base
                    sink.write([patient.subject_id, hadm_id, self.pharmacy_id, f"{patient.subject_id}-{poe_seq}",
                                poe_seq, "", _fmt(start), _fmt(stop), "BASE", drug, "", "", ndc, strength, "", dose,
                                unit, dose, unit, "", row["route"]])
            else:
                generic = _data.drug_display_name(drugs[key])
                sink.write([sink.rows + 1, patient.subject_id, hadm_id, "",
                            f"{start.date().isoformat()} 00:00:00", f"{stop.date().isoformat()} 00:00:00", "MAIN",
                            row["drug"], row["drug"], generic, row["formulary_drug_cd"], row["gsn"], row["ndc"],
                            row["prod_strength"], row["dose_val_rx"], row["dose_unit_rx"], row["form_val_disp"],
                            row["form_unit_disp"], row["route"]])
                base = self._base(extra, row)
                if base is not None:
                    drug, ndc, strength, dose, unit = base
                    sink.write([sink.rows + 1, patient.subject_id, hadm_id, "",
                                f"{start.date().isoformat()} 00:00:00", f"{stop.date().isoformat()} 00:00:00", "BASE",
                                drug, drug, drug, "", "", ndc, strength, dose, unit, dose, unit, row["route"]])
        return poe_seq

    @staticmethod
    def _base(extra: random.Random | None, row: dict) -> tuple[str, str, str, str, str] | None:
        """The diluent of an IV order (most IV orders have one), or None."""
        if extra is None or not str(row["route"]).upper().startswith("IV") or extra.random() < 0.2:
            return None
        return extra.choice(_BASES)

    def _note(self, rng: random.Random, patient: clinical.Patient, p: _Placed, hadm_id: int, note_seq: int,
              note: notes.ComposedNote) -> None:
        note_id = f"{patient.subject_id}-DS-{note_seq}"
        chart_day = p.disch.date()
        storetime = p.disch + timedelta(hours=rng.uniform(1, 40))
        if self.layout == "mimic4":
            self.sinks["notes"].write([note_id, patient.subject_id, hadm_id, "DS", note_seq,
                                       f"{chart_day.isoformat()} 00:00:00", _fmt(storetime.replace(microsecond=0)),
                                       note.text])
        else:
            self.sinks["notes"].write([self.sinks["notes"].rows + 1, patient.subject_id, hadm_id, chart_day.isoformat(),
                                       "", "", "Discharge summary", "Report", "", "", note.text])
        cols = self.gold_rows
        for e in note.entities:
            cols["note_id"].append(note_id)
            cols["start_char"].append(e.start_char)
            cols["end_char"].append(e.end_char)
            cols["label"].append(e.label)
            cols["text"].append(e.text)
            cols["is_negated"].append(e.is_negated)
            cols["is_uncertain"].append(e.is_uncertain)
            cols["is_historical"].append(e.is_historical)
            cols["is_family"].append(e.is_family)
            cols["is_hypothetical"].append(e.is_hypothetical)
            cols["section"].append(e.section)
            cols["template_id"].append(e.template_id)
            cols["term"].append(e.term)

    def flush_gold(self) -> None:
        n = len(self.gold_rows["note_id"])
        if not n:
            return
        self.gold.write_table(pa.table(self.gold_rows, schema=GOLD_SCHEMA))
        self.gold_count += n
        self.gold_rows = {f.name: [] for f in GOLD_SCHEMA}

    def plant_defects(self) -> None:
        """Defect rows appended at the end of the files (orphans, undatable rows, impossible values)."""
        labs, m4 = self.sinks["labs"], self.layout == "mimic4"

        def lab(labevent_id, subject_id, hadm_id, charttime: str, value: str, storetime: str = "") -> None:
            if m4:
                labs.write([labevent_id, subject_id, hadm_id, "", 50912, charttime, storetime, value, value, "mg/dL",
                            0.5, 1.2, "", "", ""])
            else:
                labs.write([labevent_id, subject_id, hadm_id, 50912, charttime, value, value, "mg/dL", ""])

        def next_lab_id() -> int:
            self.labevent_id += 1
            return self.labevent_id if m4 else labs.rows + 1

        for i, (_, subject_id, hadm_id) in enumerate(self.defect_candidates[:10]):
            if i % 2 == 0:  # an admission the source does not have, and no charttime: nothing dates it
                lab(next_lab_id(), subject_id, hadm_id + 7_000_000, "", "1.1")
            else:  # no charttime (dated through its admission) and an impossible value
                lab(next_lab_id(), subject_id, hadm_id, "", "-1.0")
        if self.defect_candidates:
            charttime, subject_id, hadm_id = self.defect_candidates[0]
            # outpatient lab (no admission) whose only timestamp a spreadsheet rewrote
            lab(next_lab_id(), subject_id, "", _spreadsheet(charttime), "1.3")
            # an id too large for 64 bits, on an otherwise good row
            lab("9" * 20, subject_id, hadm_id, _fmt(charttime), "1.0",
                _fmt(charttime + timedelta(minutes=45)) if m4 else "")
            dx = self.sinks["diagnoses"]
            if m4:
                dx.write([subject_id, hadm_id + 7_000_000, 1, "I10", 10])
            else:
                dx.write([dx.rows + 1, subject_id, hadm_id + 7_000_000, 1, "4019"])

    def close(self) -> dict[str, int]:
        self.flush_gold()
        self.gold.close()
        counts = {}
        for table, sink in self.sinks.items():
            sink.close()
            counts[table] = sink.rows
        counts["note_entities"] = self.gold_count
        return counts


def _spreadsheet(ts: datetime) -> str:
    """How a spreadsheet rewrites a timestamp (``1/2/26 14:05``): a format the source does not document."""
    return f"{ts.month}/{ts.day}/{ts.year % 100:02d} {ts:%H:%M}"


def _short_title(title: str) -> str:
    """MIMIC-III style SHORT_TITLE (at most 24 characters)."""
    words = title.replace(",", "").split()
    out = ""
    for w in words:
        nxt = f"{out} {w}".strip()
        if len(nxt) > 24:
            break
        out = nxt
    return out or title[:24]
