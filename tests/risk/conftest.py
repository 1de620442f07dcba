"""Fixtures for risk tests: hand-built tiny tables and a small synthetic history with a planted signal.

The synthetic history plants a 30-day readmission risk that depends on the last creatinine, the number
of distinct drugs and heart failure; only the last one is visible to LACE (through Charlson), so a model
that uses labs and medications must beat LACE on it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pyarrow as pa

from pipeline.contracts import conform

START = datetime(2020, 1, 1)
EPOCH = np.datetime64("1970-01-01T00:00:00", "s")
DRUGS = [f"drug_{i:02d}" for i in range(40)]
# itemid -> (normal mean, sd)
NORMAL_LABS = {
    50983: (140, 3),
    50971: (4.2, 0.4),
    51222: (12.5, 1.5),
    51301: (8, 2),
    50931: (110, 20),
    51006: (18, 5),
    50882: (24, 2),
    51265: (250, 50),
    50963: (400, 200),
}


def ts(values: np.ndarray) -> pa.Array:
    """Float seconds since epoch (NaN = null) → timestamp[s]."""
    mask = np.isnan(values)
    return pa.array(np.where(mask, 0, values).astype("int64"), pa.int64(), mask=mask).cast(pa.timestamp("s"))


def make_history(
    n_patients: int = 1500, max_admissions: int = 5, seed: int = 0, span_days: int = 900
) -> dict:
    rng = np.random.default_rng(seed)
    start = (np.datetime64(START, "s") - EPOCH).astype(np.int64).astype(float)
    day = 86_400.0
    subject_ids = np.arange(1, n_patients + 1)
    anchor_age = rng.integers(25, 90, n_patients)
    gender = rng.choice(["F", "M"], n_patients)
    dod = np.full(n_patients, np.nan)

    next_admit = start + rng.uniform(0, 300, n_patients) * day
    active = np.ones(n_patients, dtype=bool)
    rows: list[dict[str, np.ndarray]] = []
    hadm_counter = 100_000
    for _slot in range(max_admissions):  # a loop over admission slots, vectorised over patients
        active &= next_admit < start + span_days * day
        active &= ~(next_admit > dod)  # NaN dod compares False → stays active
        who = np.flatnonzero(active)
        if len(who) == 0:
            break
        n = len(who)
        admit = next_admit[who]
        los = rng.uniform(0.3, 9, n) * day
        disch = admit + los
        emergent = rng.random(n) < 0.6
        creat_high = rng.random(n) < 0.3
        n_meds = rng.poisson(5, n) + 1
        chf = rng.random(n) < 0.25
        low_albumin = rng.random(n) < 0.25
        age = anchor_age[who].astype(float)
        readmit_logit = -2.4 + 1.8 * creat_high + 0.35 * (n_meds - 6) + 0.7 * chf
        readmit = rng.random(n) < 1 / (1 + np.exp(-readmit_logit))
        in_hospital_death = rng.random(n) < 0.02
        death_logit = -3.2 + 0.05 * (age - 60) + 1.8 * low_albumin
        dies_after = ~in_hospital_death & (rng.random(n) < 1 / (1 + np.exp(-death_logit)))
        dod[who[in_hospital_death]] = np.floor(disch[in_hospital_death] / day) * day
        dod[who[dies_after]] = (
            np.floor((disch[dies_after] + rng.uniform(5, 330, dies_after.sum()) * day) / day) * day
        )
        hadm = np.arange(hadm_counter, hadm_counter + n)
        hadm_counter += n
        rows.append(
            {
                "subject_id": subject_ids[who],
                "hadm_id": hadm,
                "admittime": admit,
                "dischtime": disch,
                "deathtime": np.where(in_hospital_death, disch, np.nan),
                "emergent": emergent,
                "edregtime": np.where(emergent, admit - 4 * 3600, np.nan),
                "creat_high": creat_high,
                "n_meds": n_meds,
                "chf": chf,
                "low_albumin": low_albumin,
                "icd10": rng.random(n) < 0.5,
            }
        )
        gap = np.where(readmit, rng.uniform(2, 27, n), rng.uniform(45, 260, n)) * day
        next_admit[who] = disch + gap
        active[who[in_hospital_death]] = False

    adm = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    n_adm = len(adm["hadm_id"])
    ds = pa.array((adm["dischtime"] // day).astype("int32"), pa.int32()).cast(pa.date32())
    admissions = pa.table(
        {
            "subject_id": adm["subject_id"],
            "hadm_id": adm["hadm_id"],
            "admittime": ts(adm["admittime"]),
            "dischtime": ts(adm["dischtime"]),
            "deathtime": ts(adm["deathtime"]),
            "admission_type": np.where(adm["emergent"], "EW EMER.", "ELECTIVE"),
            "admission_location": pa.nulls(n_adm, pa.string()),
            "discharge_location": pa.nulls(n_adm, pa.string()),
            "insurance": pa.nulls(n_adm, pa.string()),
            "language": pa.nulls(n_adm, pa.string()),
            "marital_status": pa.nulls(n_adm, pa.string()),
            "race": pa.nulls(n_adm, pa.string()),
            "edregtime": ts(adm["edregtime"]),
            "edouttime": ts(adm["edregtime"] + 3 * 3600),
            "hospital_expire_flag": np.isfinite(adm["deathtime"]).astype("int32"),
            "ds": ds,
        }
    )
    dod_arr = pa.array(
        np.where(np.isnan(dod), 0, dod // day).astype("int32"), pa.int32(), mask=np.isnan(dod)
    ).cast(pa.date32())
    patients = pa.table(
        {
            "subject_id": subject_ids,
            "gender": gender,
            "anchor_age": anchor_age.astype("int32"),
            "anchor_year": np.full(n_patients, 2020, dtype="int32"),
            "anchor_year_group": pa.nulls(n_patients, pa.string()),
            "dod": dod_arr,
            "ds": pa.array([date(2020, 1, 1)] * n_patients, pa.date32()),
        }
    )

    # diagnoses: heart failure when planted, plus background codes; ICD-9 or ICD-10 per admission
    icd10 = adm["icd10"]
    dx_hadm = [adm["hadm_id"], adm["hadm_id"][adm["chf"]]]
    dx_code = [np.where(icd10, "I10", "4019"), np.where(icd10[adm["chf"]], "I5023", "4280")]
    dx_ver = [np.where(icd10, 10, 9), np.where(icd10[adm["chf"]], 10, 9)]
    diagnoses = _rows_table(adm, dx_hadm, {"icd_code": dx_code, "icd_version": dx_ver})
    diagnoses = diagnoses.append_column("seq_num", pa.array(np.ones(diagnoses.num_rows, dtype="int32")))

    # labs: two creatinine values (the last one high when planted), one of each other key lab (some missing)
    lab_hadm, lab_item, lab_value, lab_time = [], [], [], []
    for offset, values in (
        (0.2, rng.normal(1.0, 0.2, n_adm)),
        (0.9, np.where(adm["creat_high"], rng.normal(2.6, 0.4, n_adm), rng.normal(0.9, 0.2, n_adm))),
    ):
        lab_hadm.append(adm["hadm_id"])
        lab_item.append(np.full(n_adm, 50912))
        lab_value.append(values)
        lab_time.append(adm["admittime"] + offset * (adm["dischtime"] - adm["admittime"]))
    albumin = np.where(adm["low_albumin"], rng.normal(2.7, 0.3, n_adm), rng.normal(4.0, 0.3, n_adm))
    for itemid, (mean, sd) in [*NORMAL_LABS.items(), (50862, (None, None))]:
        present = rng.random(n_adm) < (0.3 if itemid == 50963 else 0.9)
        values = albumin if itemid == 50862 else rng.normal(mean, sd, n_adm)
        lab_hadm.append(adm["hadm_id"][present])
        lab_item.append(np.full(present.sum(), itemid))
        lab_value.append(values[present])
        lab_time.append((adm["admittime"] + 0.5 * (adm["dischtime"] - adm["admittime"]))[present])
    value = np.concatenate(lab_value)
    n_labs = len(value)
    lab_hadm_all = np.concatenate(lab_hadm)
    subject_of = dict(zip(adm["hadm_id"].tolist(), adm["subject_id"].tolist(), strict=True))
    labs = pa.table(
        {
            "labevent_id": np.arange(1, n_labs + 1),
            "subject_id": np.array([subject_of[h] for h in lab_hadm_all]),
            "hadm_id": lab_hadm_all,
            "specimen_id": pa.nulls(n_labs, pa.int64()),
            "itemid": np.concatenate(lab_item).astype("int32"),
            "charttime": ts(np.concatenate(lab_time)),
            "storetime": pa.nulls(n_labs, pa.timestamp("s")),
            "value": pa.array(np.round(value, 2).astype(str)),
            "valuenum": value,
            "valueuom": pa.nulls(n_labs, pa.string()),
            "ref_range_lower": pa.nulls(n_labs, pa.float64()),
            "ref_range_upper": pa.nulls(n_labs, pa.float64()),
            "flag": pa.nulls(n_labs, pa.string()),
            "priority": pa.nulls(n_labs, pa.string()),
            "comments": pa.nulls(n_labs, pa.string()),
            "ds": pa.array(np.zeros(n_labs, "int32")).cast(pa.date32()),
        }
    )

    # prescriptions: n_meds distinct drugs, and one repeated order per admission (distinct count must ignore it)
    rx_hadm = np.repeat(adm["hadm_id"], adm["n_meds"])
    within = np.arange(len(rx_hadm)) - np.repeat(np.cumsum(adm["n_meds"]) - adm["n_meds"], adm["n_meds"])
    drug = np.array(DRUGS, dtype=object)[(within * 7 + rx_hadm) % len(DRUGS)]
    rx_hadm = np.concatenate([rx_hadm, adm["hadm_id"]])
    drug = np.concatenate([drug, np.array(DRUGS, dtype=object)[adm["hadm_id"] % len(DRUGS)]])
    n_rx = len(rx_hadm)
    prescriptions = pa.table(
        {
            "prescription_id": np.arange(1, n_rx + 1),
            "subject_id": np.array([subject_of[h] for h in rx_hadm]),
            "hadm_id": rx_hadm,
            "starttime": pa.nulls(n_rx, pa.timestamp("s")),
            "stoptime": pa.nulls(n_rx, pa.timestamp("s")),
            "drug_type": pa.nulls(n_rx, pa.string()),
            "drug": pa.array(drug, pa.string()),
            "ndc": pa.nulls(n_rx, pa.string()),
            "prod_strength": pa.nulls(n_rx, pa.string()),
            "dose_val_rx": pa.nulls(n_rx, pa.string()),
            "dose_unit_rx": pa.nulls(n_rx, pa.string()),
            "route": pa.nulls(n_rx, pa.string()),
            "ds": pa.array(np.zeros(n_rx, "int32")).cast(pa.date32()),
        }
    )
    return {
        "admissions": conform(admissions, "admissions"),
        "patients": conform(patients, "patients"),
        "diagnoses": conform(diagnoses, "diagnoses"),
        "labs": conform(labs, "labs"),
        "prescriptions": conform(prescriptions, "prescriptions"),
    }


def _rows_table(adm: dict, hadm_parts: list, columns: dict) -> pa.Table:
    hadm = np.concatenate(hadm_parts)
    subject_of = dict(zip(adm["hadm_id"].tolist(), adm["subject_id"].tolist(), strict=True))
    data = {"subject_id": np.array([subject_of[h] for h in hadm]), "hadm_id": hadm}
    for name, parts in columns.items():
        data[name] = np.concatenate(parts)
    data["ds"] = pa.array(np.zeros(len(hadm), "int32")).cast(pa.date32())
    return pa.table(data)


def at(day: float, hour: float = 0.0) -> datetime:
    """A timestamp ``day`` days (and ``hour`` hours) after 2020-01-01, for hand-built tables."""
    return START + timedelta(days=day, hours=hour)
