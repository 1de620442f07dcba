"""score_admissions: the admission_risk contract, bands, explanations, bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.risk.errors import MissingFeatureError, RiskError
from pipeline.risk.score import risk_bands, score_admissions
from pipeline.schemas import arrow_schema


def partition(history: dict, n: int = 200) -> dict:
    admissions = history["admissions"].slice(history["admissions"].num_rows - n)
    keep = pc.is_in(
        history["diagnoses"].column("hadm_id"), value_set=admissions.column("hadm_id").combine_chunks()
    )
    return {
        "admissions": admissions,
        "patients": history["patients"],
        "diagnoses": history["diagnoses"].filter(keep),
        "labs": history["labs"],
        "prescriptions": history["prescriptions"],
        "prior_admissions": history["admissions"],
        "note_entities": None,
    }


def test_score_admissions_matches_contract(history: dict, trained: tuple) -> None:
    _, model, _ = trained
    out = score_admissions(**partition(history), model=model, run_id="run-1")
    assert out.schema == arrow_schema("admission_risk")
    assert out.num_rows == 200 and out.column("hadm_id").null_count == 0
    assert all(out.column(c).null_count == 0 for c in out.column_names)
    p = out.column("readmit_30d_prob").to_numpy()
    assert ((p > 0) & (p < 1)).all()
    assert set(out.column("model_version").to_pylist()) == {model.version}
    factors = json.loads(out.column("top_factors")[0].as_py())
    assert len(factors) == 5 and set(factors[0]) == {"feature", "value", "contribution"}
    magnitudes = [abs(f["contribution"]) for f in factors]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert all(f["feature"] in model.feature_names for f in factors)


def test_score_top_factors_sum_to_the_logit_when_all_features_shown(history: dict, trained: tuple) -> None:
    _, model, _ = trained
    parts = partition(history, 20)
    out = score_admissions(**parts, model=model, run_id="r", top_k=len(model.feature_names))
    for row in range(3):
        factors = json.loads(out.column("top_factors")[row].as_py())
        logit = sum(f["contribution"] for f in factors) + model.bias[0].item()
        assert 1 / (1 + np.exp(-logit)) == pytest.approx(
            out.column("readmit_30d_prob")[row].as_py(), abs=2e-3
        )


def test_score_risk_bands_thresholds() -> None:
    p = np.array([0.0, 0.05, 0.1, 0.2, 0.25, 0.9])
    assert risk_bands(p).to_pylist() == ["low", "low", "medium", "medium", "high", "high"]
    assert risk_bands(p, {"ok": 0.0, "watch": 0.5}).to_pylist() == ["ok"] * 5 + ["watch"]
    with pytest.raises(RiskError, match="R008"):
        risk_bands(p, {"medium": 0.1, "high": 0.25})


def test_score_admissions_without_diagnoses_labs_or_notes(history: dict, trained: tuple) -> None:
    _, model, _ = trained
    parts = partition(history, 5)
    parts["diagnoses"] = parts["diagnoses"].slice(0, 0)
    parts["labs"] = parts["labs"].slice(0, 0)
    out = score_admissions(**parts, model=model, run_id="r")
    assert out.column("charlson_index").to_pylist() == [0] * 5
    assert out.column("elixhauser_vw").to_pylist() == [0] * 5
    assert out.column("readmit_30d_prob").null_count == 0
    values = [f["value"] for f in json.loads(out.column("top_factors")[0].as_py())]
    assert all(v is None or np.isfinite(v) for v in values)


def test_score_admissions_malformed_icd_codes(history: dict, trained: tuple) -> None:
    _, model, _ = trained
    parts = partition(history, 3)
    hadm = parts["admissions"].column("hadm_id").to_pylist()
    parts["diagnoses"] = pa.table(
        {
            "subject_id": [1, 1, 1],
            "hadm_id": hadm,
            "icd_code": ["", "I50.23", "4280"],
            "icd_version": pa.array([10, 10, 10], pa.int32()),
        }
    )
    out = score_admissions(**parts, model=model, run_id="r")
    assert out.column("charlson_index").to_pylist() == [0, 0, 0]


def test_score_admissions_refuses_features_the_model_lacks(history: dict, trained: tuple) -> None:
    _, model, _ = trained
    expecting_more = type(model)(
        model.weight,
        model.bias,
        (*model.feature_names[:-1], "lab_troponin_last"),
        model.means,
        model.stds,
        model.medians,
        model.metadata,
        model.device,
    )
    with pytest.raises(MissingFeatureError, match="lab_troponin_last"):
        score_admissions(**partition(history, 3), model=expecting_more, run_id="r")
