"""Features known at discharge, one float row per admission, for the learned risk model.

Everything comes from the index admission (its diagnoses, labs with charttime <= dischtime, drugs, notes)
or from the patient's *earlier* admissions (admittime strictly before this admittime), so the features of
an admission never depend on what happened after its discharge.

Missing values stay missing here (NaN/null, with an explicit ``*_missing`` indicator for labs and NER);
the model imputes them with the training medians stored in its metadata, never with silent zeros.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.risk._arrow import SECONDS_PER_DAY, floats, ints, lookup, require, seconds
from pipeline.risk.indices import (
    RISK_DATA_DIR,
    comorbidity_flags,
    comorbidity_map,
    count_prior_events,
    emergent_admission,
    read_data_csv,
)

# Charlson categories Elixhauser lacks; the shared ones come from the Elixhauser flags only, so a
# comorbidity is not split over two near-identical features.
CHARLSON_ONLY = ("mi", "cerebrovascular", "dementia")
BASE_FEATURES = (
    "age",
    "sex_male",
    "los_days",
    "emergent",
    "prior_admissions_6m",
    "prior_admissions_12m",
    "ed_visits_6m",
    "ed_visits_12m",
    "charlson_index",
    "elixhauser_vw",
)
LAB_SUMMARY_FEATURES = ("lab_count", "abnormal_lab_count")
NER_FEATURES = ("ner_problem_count", "ner_missing")
AFFIRMING_FLAGS = ("is_negated", "is_uncertain", "is_hypothetical", "is_family")


@cache
def key_labs() -> tuple[tuple[str, int], ...]:
    """(name, itemid) of the key labs (schemas/risk/key_labs.csv)."""
    return tuple((r["name"].strip(), int(r["itemid"])) for r in read_data_csv(RISK_DATA_DIR / "key_labs.csv"))


def feature_names() -> tuple[str, ...]:
    """The feature columns of :func:`build_features`, in order."""
    elix = tuple(f"elix_{c}" for c in comorbidity_map("elixhauser").categories)
    charlson_only = tuple(f"charlson_{c}" for c in CHARLSON_ONLY)
    labs = tuple(f"lab_{name}_{part}" for name, _ in key_labs() for part in ("last", "missing"))
    return (
        *BASE_FEATURES,
        *elix,
        *charlson_only,
        *labs,
        *LAB_SUMMARY_FEATURES,
        "medication_count",
        *NER_FEATURES,
    )


def _per_admission(hadm: np.ndarray, rows_hadm: np.ndarray) -> np.ndarray:
    """Position of each row's admission in ``hadm`` (-1 when the row belongs to another admission)."""
    return lookup(rows_hadm, hadm)


def _lab_features(hadm: np.ndarray, disch: np.ndarray, labs: pa.Table) -> dict[str, np.ndarray]:
    require(labs, "labs", ("hadm_id", "itemid", "charttime", "valuenum"))
    n = len(hadm)
    row = _per_admission(hadm, ints(labs.column("hadm_id")))
    chart = seconds(labs.column("charttime"))
    in_stay = (row >= 0) & (chart <= disch[np.maximum(row, 0)])
    value = floats(labs.column("valuenum"))
    itemid = ints(labs.column("itemid"))
    out: dict[str, np.ndarray] = {}

    out["lab_count"] = np.bincount(row[in_stay], minlength=n).astype(np.float64)
    abnormal = np.zeros(labs.num_rows, dtype=bool)
    if "flag" in labs.column_names:
        flag = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(labs.column("flag"), pa.string())))
        abnormal |= np.asarray(pc.fill_null(pc.equal(flag, "abnormal"), False))
    for bound, outside in (("ref_range_lower", np.less), ("ref_range_upper", np.greater)):
        if bound in labs.column_names:
            limit = floats(labs.column(bound))
            with np.errstate(invalid="ignore"):
                abnormal |= outside(value, limit)  # NaN on either side compares False
    out["abnormal_lab_count"] = np.bincount(row[in_stay & abnormal], minlength=n).astype(np.float64)

    usable = in_stay & np.isfinite(value)
    for name, lab_itemid in key_labs():  # ~11 labs, each vectorised over all rows
        sel = np.flatnonzero(usable & (itemid == lab_itemid))
        last = np.full(n, np.nan)
        if len(sel):
            order = sel[np.lexsort((chart[sel], row[sel]))]  # by admission, then charttime
            rows_sorted = row[order]
            is_last = np.r_[rows_sorted[1:] != rows_sorted[:-1], True]
            last[rows_sorted[is_last]] = value[order[is_last]]
        out[f"lab_{name}_last"] = last
        out[f"lab_{name}_missing"] = np.isnan(last).astype(np.float64)
    return out


def _ner_features(
    hadm: np.ndarray, note_entities: pa.Table | None, ner_hadm_ids: np.ndarray | None
) -> dict[str, np.ndarray]:
    n = len(hadm)
    if note_entities is None:  # no NER output for this run: the count is unknown, not zero
        return {"ner_problem_count": np.full(n, np.nan), "ner_missing": np.ones(n)}
    require(note_entities, "note_entities", ("hadm_id", "label", *AFFIRMING_FLAGS))
    # an admission whose notes NER never read has an unknown count (missing), not zero problems
    covered = np.ones(n, dtype=bool) if ner_hadm_ids is None else lookup(hadm, np.unique(ner_hadm_ids)) >= 0
    row = _per_admission(hadm, ints(note_entities.column("hadm_id")))
    keep = (row >= 0) & np.asarray(
        pc.fill_null(pc.equal(pc.utf8_upper(note_entities.column("label")), "PROBLEM"), False)
    )
    for flag in AFFIRMING_FLAGS:  # affirmed, about the patient: a null flag is treated as set (not affirmed)
        keep &= ~np.asarray(pc.fill_null(pc.cast(note_entities.column(flag), pa.bool_()), True))
    counts = np.bincount(row[keep], minlength=n).astype(np.float64)
    return {
        "ner_problem_count": np.where(covered, counts, np.nan),
        "ner_missing": (~covered).astype(np.float64),
    }


def build_features(
    admissions: pa.Table,
    patients: pa.Table,
    diagnoses: pa.Table,
    labs: pa.Table,
    prescriptions: pa.Table,
    prior_admissions: pa.Table,
    note_entities: pa.Table | None = None,
    *,
    charlson_weights: str = "charlson1987",
    ner_hadm_ids: pa.Array | pa.ChunkedArray | np.ndarray | None = None,
) -> pa.Table:
    """One row per admission of ``admissions`` (same order): ``hadm_id`` + float64 feature columns.

    ``prior_admissions``: all known admissions of these subjects (history; may include the index
    admissions and even later ones: only those with admittime before each index admittime are used).
    ``diagnoses``, ``labs``, ``prescriptions``, ``note_entities``: rows of the index admissions (others are
    ignored). ``note_entities=None`` means NER did not run: ``ner_problem_count`` is null and
    ``ner_missing`` is 1. ``ner_hadm_ids``: the admissions whose notes NER processed (default: all of
    ``admissions`` when ``note_entities`` is given); the others are missing in the same way, so history
    loaded without NER and a day scored with NER use one convention.
    """
    require(admissions, "admissions", ("subject_id", "hadm_id", "admittime", "dischtime", "admission_type"))
    require(patients, "patients", ("subject_id", "gender", "anchor_age", "anchor_year"))
    require(prior_admissions, "admissions", ("subject_id", "hadm_id", "admittime", "edregtime"))
    require(prescriptions, "prescriptions", ("hadm_id", "drug"))
    n = admissions.num_rows
    hadm = ints(admissions.column("hadm_id"))
    subject = ints(admissions.column("subject_id"))
    admit, disch = seconds(admissions.column("admittime")), seconds(admissions.column("dischtime"))
    columns: dict[str, np.ndarray] = {}

    patient_row = lookup(subject, ints(patients.column("subject_id")))
    known = patient_row >= 0
    anchor_age = floats(patients.column("anchor_age"))
    anchor_year = floats(patients.column("anchor_year"))
    discharge_year = pc.year(pc.cast(admissions.column("dischtime"), pa.timestamp("s"), safe=False))
    year = floats(discharge_year)
    safe_row = np.maximum(patient_row, 0)
    columns["age"] = np.where(
        known, anchor_age[safe_row] + (year - anchor_year[safe_row]) if len(anchor_age) else np.nan, np.nan
    )
    gender = pc.utf8_upper(pc.utf8_trim_whitespace(pc.cast(patients.column("gender"), pa.string())))
    male = floats(pc.if_else(pc.equal(gender, "M"), 1.0, pc.if_else(pc.equal(gender, "F"), 0.0, None)))
    columns["sex_male"] = np.where(known, male[safe_row] if len(male) else np.nan, np.nan)
    columns["los_days"] = (disch - admit) / SECONDS_PER_DAY  # continuous here; LACE uses calendar days
    columns["emergent"] = emergent_admission(admissions.column("admission_type")).astype(np.float64)

    prior_subject = ints(prior_admissions.column("subject_id"))
    prior_hadm = ints(prior_admissions.column("hadm_id"))
    prior_admit = seconds(prior_admissions.column("admittime"))
    prior_ed = seconds(prior_admissions.column("edregtime"))
    for days, suffix in ((182, "6m"), (365, "12m")):
        columns[f"prior_admissions_{suffix}"] = count_prior_events(
            subject, hadm, admit, prior_subject, prior_hadm, prior_admit, days
        ).astype(np.float64)
        ed_counts = count_prior_events(
            subject, hadm, admit, prior_subject, prior_hadm, prior_ed, days, prior_admit=prior_admit
        )
        columns[f"ed_visits_{suffix}"] = ed_counts.astype(np.float64)

    charlson_cmap, elix_cmap = comorbidity_map("charlson"), comorbidity_map("elixhauser")
    _, charlson_flags, _ = comorbidity_flags(diagnoses, "charlson", hadm)
    _, elix_flags, _ = comorbidity_flags(diagnoses, "elixhauser", hadm)
    columns["charlson_index"] = charlson_flags.astype(np.float64) @ charlson_cmap.weights[charlson_weights]
    columns["elixhauser_vw"] = elix_flags.astype(np.float64) @ elix_cmap.weights["van_walraven2009"]
    for position, category in enumerate(elix_cmap.categories):
        columns[f"elix_{category}"] = elix_flags[:, position].astype(np.float64)
    for category in CHARLSON_ONLY:
        columns[f"charlson_{category}"] = charlson_flags[:, charlson_cmap.categories.index(category)].astype(
            np.float64
        )

    columns.update(_lab_features(hadm, disch, labs))

    rx_row = _per_admission(hadm, ints(prescriptions.column("hadm_id")))
    drug = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(prescriptions.column("drug"), pa.string())))
    valid_rx = (rx_row >= 0) & np.asarray(pc.fill_null(pc.greater(pc.utf8_length(drug), 0), False))
    if "drug_type" in prescriptions.column_names:
        # a BASE component is the diluent an order is mixed in (saline, dextrose), not a medication
        kind = pc.utf8_upper(pc.utf8_trim_whitespace(pc.cast(prescriptions.column("drug_type"), pa.string())))
        valid_rx &= ~np.asarray(pc.fill_null(pc.equal(kind, "BASE"), False))
    distinct = (
        pa.table({"row": rx_row[valid_rx], "drug": pc.filter(drug, pa.array(valid_rx))})
        .group_by(["row", "drug"])
        .aggregate([])
    )
    columns["medication_count"] = np.bincount(
        np.asarray(distinct.column("row").to_numpy(), dtype=np.int64), minlength=n
    ).astype(np.float64)

    covered = None
    if ner_hadm_ids is not None:
        covered = (
            ints(ner_hadm_ids)
            if isinstance(ner_hadm_ids, pa.Array | pa.ChunkedArray)
            else np.asarray(ner_hadm_ids, dtype=np.int64)
        )
    columns.update(_ner_features(hadm, note_entities, covered))

    arrays = {"hadm_id": pa.array(hadm, pa.int64())}
    for name in feature_names():
        values = np.asarray(columns[name], dtype=np.float64)
        arrays[name] = pa.array(values, pa.float64(), mask=np.isnan(values))
    return pa.table(arrays).replace_schema_metadata({b"charlson_weights": charlson_weights.encode()})
