"""Features known at discharge: no leakage, labs, medications, NER, missing values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.risk.features import build_features, feature_names
from tests.risk.conftest import at


def tables(extra_admissions: list[dict] | None = None, labs_rows: list[dict] | None = None) -> dict:
    index = {
        "subject_id": 1,
        "hadm_id": 10,
        "admittime": at(100),
        "dischtime": at(104),
        "admission_type": "EW EMER.",
        "edregtime": at(99, 20),
        "ds": at(104).date(),
    }
    history = [
        {
            "subject_id": 1,
            "hadm_id": 5,
            "admittime": at(40),
            "dischtime": at(42),
            "admission_type": "EW EMER.",
            "edregtime": at(39, 22),
            "ds": at(42).date(),
        },
        {
            "subject_id": 1,
            "hadm_id": 6,
            "admittime": at(-100),
            "dischtime": at(-98),
            "admission_type": "ELECTIVE",
            "edregtime": None,
            "ds": at(-98).date(),
        },
        *(extra_admissions or []),
    ]
    keys = {
        "subject_id": pa.int64(),
        "hadm_id": pa.int64(),
        "admittime": pa.timestamp("s"),
        "dischtime": pa.timestamp("s"),
        "admission_type": pa.string(),
        "edregtime": pa.timestamp("s"),
        "ds": pa.date32(),
    }

    def adm(rows: list[dict]) -> pa.Table:
        return pa.table({k: pa.array([r[k] for r in rows], t) for k, t in keys.items()})

    labs_rows = (
        labs_rows
        if labs_rows is not None
        else [
            {"hadm_id": 10, "itemid": 50912, "charttime": at(101), "valuenum": 1.1, "flag": None},
            {"hadm_id": 10, "itemid": 50912, "charttime": at(103), "valuenum": 2.3, "flag": "abnormal"},
            {
                "hadm_id": 10,
                "itemid": 50912,
                "charttime": at(105),
                "valuenum": 9.9,
                "flag": "abnormal",
            },  # after discharge
            {
                "hadm_id": 5,
                "itemid": 50983,
                "charttime": at(41),
                "valuenum": 120.0,
                "flag": "abnormal",
            },  # other stay
        ]
    )
    return {
        "admissions": adm([index]),
        "patients": pa.table(
            {
                "subject_id": [1],
                "gender": ["M"],
                "anchor_age": pa.array([70], pa.int32()),
                "anchor_year": pa.array([2018], pa.int32()),
            }
        ),
        "diagnoses": pa.table({"hadm_id": [10, 10], "icd_code": ["I5023", "C787"], "icd_version": [10, 10]}),
        "labs": pa.table(
            {k: [r[k] for r in labs_rows] for k in ("hadm_id", "itemid", "charttime", "valuenum", "flag")},
            schema=pa.schema(
                [
                    ("hadm_id", pa.int64()),
                    ("itemid", pa.int32()),
                    ("charttime", pa.timestamp("s")),
                    ("valuenum", pa.float64()),
                    ("flag", pa.string()),
                ]
            ),
        ),
        "prescriptions": pa.table(
            {"hadm_id": [10, 10, 10, 5], "drug": ["Furosemide", "furosemide ", "Heparin", "X"]}
        ),
        "prior_admissions": adm([index, *history]),
    }


def row(features: pa.Table) -> dict:
    return features.to_pylist()[0]


def test_features_columns_and_values() -> None:
    features = build_features(**tables())
    assert features.column_names == ["hadm_id", *feature_names()]
    assert all(features.schema.field(n).type == pa.float64() for n in feature_names())
    r = row(features)
    assert r["age"] == 72  # 70 + (2020 - 2018)
    assert r["sex_male"] == 1 and r["emergent"] == 1 and r["los_days"] == 4
    assert (
        r["prior_admissions_6m"] == 1 and r["prior_admissions_12m"] == 2
    )  # day -100 is 200 d before: 12 m only
    assert r["ed_visits_6m"] == 1
    assert r["elix_chf"] == 1 and r["elix_metastatic_cancer"] == 1 and r["charlson_index"] == 7
    assert r["lab_creatinine_last"] == 2.3 and r["lab_creatinine_missing"] == 0  # not the post-discharge 9.9
    assert r["lab_count"] == 2 and r["abnormal_lab_count"] == 1
    assert (
        r["lab_sodium_last"] is None and r["lab_sodium_missing"] == 1
    )  # the other stay's sodium is not used
    assert r["medication_count"] == 2  # furosemide twice, heparin
    assert r["ner_problem_count"] is None and r["ner_missing"] == 1


def test_features_no_leakage_from_later_admissions() -> None:
    later = [
        {
            "subject_id": 1,
            "hadm_id": 11,
            "admittime": at(110),
            "dischtime": at(112),
            "admission_type": "EW EMER.",
            "edregtime": at(109),
            "ds": at(112).date(),
        },
        {
            "subject_id": 1,
            "hadm_id": 12,
            "admittime": at(103),
            "dischtime": at(107),
            "admission_type": "EW EMER.",
            "edregtime": at(99, 23),
            "ds": at(107).date(),
        },
    ]  # registered before our admittime but admitted after
    base = build_features(**tables())
    with_future = build_features(**tables(extra_admissions=later))
    assert base.equals(with_future)


def test_features_ner_counts_affirmed_patient_problems_only() -> None:
    flags = ["is_negated", "is_uncertain", "is_hypothetical", "is_family", "is_historical"]
    entities = [
        ("PROBLEM", {}),
        ("PROBLEM", {"is_historical": True}),
        ("PROBLEM", {"is_negated": True}),
        ("PROBLEM", {"is_family": True}),
        ("PROBLEM", {"is_uncertain": True}),
        ("TREATMENT", {}),
    ]
    note_entities = pa.table(
        {
            "hadm_id": pa.array([10] * len(entities), pa.int64()),
            "label": [label for label, _ in entities],
            **{f: [bool(set_flags.get(f, False)) for _, set_flags in entities] for f in flags},
        }
    )
    r = row(build_features(**tables(), note_entities=note_entities))
    assert r["ner_problem_count"] == 2 and r["ner_missing"] == 0
    empty = note_entities.slice(0, 0)
    assert row(build_features(**tables(), note_entities=empty))["ner_problem_count"] == 0


def test_features_no_labs_at_all_are_missing_not_zero() -> None:
    r = row(build_features(**tables(labs_rows=[])))
    for name in ("creatinine", "sodium", "ntprobnp"):
        assert r[f"lab_{name}_last"] is None and r[f"lab_{name}_missing"] == 1
    assert r["lab_count"] == 0


def test_features_missing_input_column_is_named() -> None:
    parts = tables()
    parts["prescriptions"] = parts["prescriptions"].drop_columns(["drug"])
    with pytest.raises(ValueError, match="'drug'"):
        build_features(**parts)


def test_features_vectorised_over_synthetic_history(history: dict) -> None:
    features = build_features(**history, prior_admissions=history["admissions"])
    assert features.num_rows == history["admissions"].num_rows
    assert np.nanmax(features.column("medication_count").to_numpy()) > 1
