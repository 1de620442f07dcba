"""Outcome labels for the risk model: 30-day readmission and 1-year mortality.

Definitions (choices documented here, tested in tests/risk/test_labels.py):

* ``readmit_30d`` = 1 when another admission of the same patient has ``dischtime <= admittime <=
  dischtime + 30 days``. Not eligible: admissions ending in death (``deathtime`` set or
  ``hospital_expire_flag`` = 1), and patients who die within 30 days of discharge without having been
  readmitted first (they could not be readmitted, so they are not negatives; CMS-style readmission
  measures exclude them too). An admission is eligible only when the data window covers the whole 30 days
  after its discharge (``dischtime + 30 d <= data_end``), whatever happened: keeping early readmissions but
  dropping unobserved negatives near the end of the data would bias the label rate upwards.
  ``data_end`` defaults to the latest dischtime in ``admissions_all`` (admissions arrive on the day of
  discharge, so a readmission still in hospital at data_end is not yet visible; pass an earlier
  ``data_end`` when that matters).
* ``mortality_1y`` = 1 for a ``dod`` from the discharge date up to 365 days after it. The learned target
  is about patients discharged alive: an in-hospital death has ``mortality_1y`` = 1 and
  ``in_hospital_death`` set, but is not eligible (its outcome is known at discharge; the risk stage
  reports it as band ``deceased``). Deaths are taken as complete for a year after every discharge (the
  MIMIC-IV convention: dod includes state death records up to one year after the last discharge) unless
  ``death_data_end`` is given, in which case survivors are eligible only when dischtime + 365 d <=
  death_data_end. Training additionally censors deaths at its cutoff (see ``pipeline.risk.train``).

>>> import pyarrow as pa
>>> from datetime import datetime as dt
>>> admissions = pa.table({"subject_id": [1, 1, 2], "hadm_id": [10, 11, 20],
...     "admittime": [dt(2020, 1, 1), dt(2020, 1, 25), dt(2020, 1, 1)],
...     "dischtime": [dt(2020, 1, 5), dt(2020, 3, 30), dt(2020, 1, 3)],
...     "deathtime": [None, None, None], "hospital_expire_flag": [0, 0, 0]})
>>> patients = pa.table({"subject_id": [1, 2], "dod": pa.array([None, None], pa.date32())})
>>> build_labels(admissions, patients).select(["hadm_id", "readmit_30d", "readmit_30d_eligible"]).to_pylist()
[{'hadm_id': 10, 'readmit_30d': 1, 'readmit_30d_eligible': True}, {'hadm_id': 11, 'readmit_30d': 0, 'readmit_30d_eligible': False}, {'hadm_id': 20, 'readmit_30d': 0, 'readmit_30d_eligible': True}]
"""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.risk._arrow import SECONDS_PER_DAY, day_floor, ints, lookup, pairs_by_key, require, seconds

READMIT_DAYS = 30
MORTALITY_DAYS = 365
TARGETS = ("readmit_30d", "mortality_1y")


def _as_seconds(value: datetime | date | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return float(seconds(pa.array([value], pa.timestamp("s")))[0])


def died_in_hospital(admissions: pa.Table) -> np.ndarray:
    died = np.zeros(admissions.num_rows, dtype=bool)
    if "deathtime" in admissions.column_names:
        died |= np.asarray(pc.is_valid(admissions.column("deathtime")))
    if "hospital_expire_flag" in admissions.column_names:
        died |= ints(admissions.column("hospital_expire_flag"), fill=0) == 1
    return died


def build_labels(
    admissions_all: pa.Table,
    patients: pa.Table,
    *,
    data_end: datetime | None = None,
    death_data_end: datetime | date | None = None,
) -> pa.Table:
    """Labels for every admission of ``admissions_all`` (all known admissions of the subjects).

    Returns hadm_id, subject_id, dischtime, readmit_30d (int8), readmit_30d_eligible (bool),
    mortality_1y (int8), mortality_1y_eligible (bool), in_hospital_death (bool), dod (date32, the
    patient's date of death or null), in input order.
    """
    require(admissions_all, "admissions", ("subject_id", "hadm_id", "admittime", "dischtime"))
    require(patients, "patients", ("subject_id", "dod"))
    subject = ints(admissions_all.column("subject_id"))
    hadm = ints(admissions_all.column("hadm_id"))
    admit = seconds(admissions_all.column("admittime"))
    disch = seconds(admissions_all.column("dischtime"))
    died = died_in_hospital(admissions_all)

    end = _as_seconds(data_end) if data_end is not None else (np.nanmax(disch) if len(disch) else np.nan)
    window = READMIT_DAYS * SECONDS_PER_DAY
    left, right = pairs_by_key(subject, subject)
    follow = (
        (hadm[right] != hadm[left]) & (admit[right] >= disch[left]) & (admit[right] <= disch[left] + window)
    )
    readmitted = np.bincount(left[follow], minlength=len(hadm)) > 0

    patient_row = lookup(subject, ints(patients.column("subject_id")))
    dod_all = seconds(patients.column("dod"))
    dod = (
        np.where(patient_row >= 0, dod_all[np.maximum(patient_row, 0)], np.nan)
        if len(dod_all)
        else (np.full(len(hadm), np.nan))
    )
    discharge_day = day_floor(disch) * SECONDS_PER_DAY
    year = MORTALITY_DAYS * SECONDS_PER_DAY
    died_within = (dod >= discharge_day) & (dod <= discharge_day + year)
    mortality = died | died_within
    # dod is a date: a death on day 30 after the discharge day is inside the readmission window
    died_before_readmission = ~readmitted & (dod >= discharge_day) & (dod <= discharge_day + window)
    readmit_eligible = ~died & ~died_before_readmission & (disch + window <= end)
    if death_data_end is None:
        mortality_eligible = np.isfinite(disch) & ~died
    else:
        mortality_eligible = ~died & (died_within | (disch + year <= _as_seconds(death_data_end)))

    return pa.table(
        {
            "hadm_id": pa.array(hadm, pa.int64()),
            "subject_id": pa.array(subject, pa.int64()),
            "dischtime": pc.cast(admissions_all.column("dischtime"), pa.timestamp("s"), safe=False),
            "readmit_30d": pa.array((readmitted & readmit_eligible).astype(np.int8), pa.int8()),
            "readmit_30d_eligible": pa.array(readmit_eligible, pa.bool_()),
            "mortality_1y": pa.array(mortality.astype(np.int8), pa.int8()),
            "mortality_1y_eligible": pa.array(mortality_eligible, pa.bool_()),
            "in_hospital_death": pa.array(died, pa.bool_()),
            "dod": pc.cast(patients.column("dod"), pa.date32()).take(
                pa.array(patient_row, mask=patient_row < 0)
            )
            if patients.num_rows
            else pa.nulls(len(hadm), pa.date32()),
        }
    )
