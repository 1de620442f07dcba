"""score_admissions: the admission_risk contract, bands, explanations, bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.contracts import arrow_schema
from pipeline.risk.errors import MissingFeatureError, RiskError
from pipeline.risk.features import build_features
from pipeline.risk.labels import died_in_hospital
from pipeline.risk.score import band_thresholds, risk_bands, score_admissions


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
    parts = partition(history)
    out = score_admissions(**parts, model=model, run_id="run-1")
    assert out.schema == arrow_schema("admission_risk")
    assert out.num_rows == 200 and out.column("hadm_id").null_count == 0
    assert all(out.column(c).null_count == 0 for c in out.column_names)
    alive = ~died_in_hospital(parts["admissions"])
    p = out.column("readmit_30d_prob").to_numpy()
    assert ((p[alive] > 0) & (p[alive] < 1)).all()
    assert set(out.column("model_version").to_pylist()) == {model.version}
    assert set(np.asarray(out.column("risk_band"))[alive]) <= {"low", "medium", "high"}
    factors = json.loads(out.column("top_factors")[int(np.argmax(np.where(alive, p, -1)))].as_py())
    assert 1 <= len(factors) <= 5
    assert set(factors[0]) == {"target", "feature", "value", "imputed", "contribution"}
    assert {f["target"] for f in factors} == {"readmit_30d"}
    contributions = [f["contribution"] for f in factors]
    assert contributions == sorted(contributions, reverse=True) and min(contributions) > 0
    assert all(f["feature"] in model.feature_names for f in factors)


def test_score_in_hospital_deaths_keep_indices_but_band_deceased(history: dict, trained: tuple) -> None:
    _, model, _ = trained
    parts = partition(history, 600)
    died = died_in_hospital(parts["admissions"])
    assert died.any() and not died.all()
    out = score_admissions(**parts, model=model, run_id="r")
    dead = out.filter(pa.array(died))
    assert set(dead.column("risk_band").to_pylist()) == {"deceased"}
    assert set(dead.column("readmit_30d_prob").to_pylist()) == {0.0}  # cannot be readmitted
    assert set(dead.column("mortality_prob").to_pylist()) == {1.0}  # the death is observed
    assert set(dead.column("top_factors").to_pylist()) == {"[]"}
    assert dead.column("lace_score").null_count == 0 and pc.max(dead.column("lace_score")).as_py() > 0
    assert "deceased" not in out.filter(pa.array(~died)).column("risk_band").to_pylist()


def test_score_top_factors_are_the_positive_exact_contributions(history: dict, trained: tuple) -> None:
    _, model, _ = trained
    parts = partition(history, 40)
    parts["labs"] = parts["labs"].filter(pc.not_equal(parts["labs"].column("itemid"), 50912))  # no creatinine
    out = score_admissions(**parts, model=model, run_id="r", top_k=len(model.feature_names))
    features = build_features(**{k: v for k, v in parts.items() if k != "note_entities"})
    raw = model.raw_matrix(features)
    exact = model.contributions(model.standardise(raw), "readmit_30d")
    alive = ~died_in_hospital(parts["admissions"])
    seen_imputed = False
    for row in np.flatnonzero(alive)[:10]:
        factors = json.loads(out.column("top_factors")[int(row)].as_py())
        expected = {
            name: c for name, c in zip(model.feature_names, exact[row], strict=True) if round(c, 4) > 0
        }
        assert {f["feature"] for f in factors} == set(expected)  # every pushing-up feature, nothing else
        for f in factors:
            i = model.feature_names.index(f["feature"])
            assert f["contribution"] == pytest.approx(expected[f["feature"]], abs=1e-4)
            assert f["imputed"] is bool(np.isnan(raw[row, i]))
            used = model.medians[i] if f["imputed"] else raw[row, i]
            assert f["value"] == pytest.approx(used, abs=1e-4)  # the value the model used, never null
            seen_imputed |= f["imputed"]
    assert seen_imputed  # missing creatinine is imputed and, being above the median, pushes the score up


def test_score_risk_bands_thresholds() -> None:
    p = np.array([0.0, 0.05, 0.1, 0.2, 0.25, 0.9])
    assert risk_bands(p).to_pylist() == ["low", "low", "medium", "medium", "high", "high"]
    assert risk_bands(p, {"ok": 0.0, "watch": 0.5}).to_pylist() == ["ok"] * 5 + ["watch"]
    with pytest.raises(RiskError, match="R008"):
        risk_bands(p, {"medium": 0.1, "high": 0.25})


@pytest.mark.parametrize(("medium", "high"), [(0.2, 0.2), (0.0, 0.25), (0.3, 0.2), (0.1, 1.5)])
def test_score_band_thresholds_from_settings_refuse_empty_bands(medium: float, high: float) -> None:
    with pytest.raises(RiskError, match=r"R013.*EHR_RISK_BAND_MEDIUM.*EHR_RISK_BAND_HIGH"):
        band_thresholds(medium, high)
    assert band_thresholds(0.1, 0.25) == {"low": 0.0, "medium": 0.1, "high": 0.25}


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
            "subject_id": [1, 1, 1, 1, 1, 1],
            "hadm_id": [*hadm, hadm[0], hadm[1], 999],  # 999: another admission, not counted
            "icd_code": ["", "I50.23", "4280", "E785", "I10", "??"],
            "icd_version": pa.array([10, 10, 10, 10, 7, 10], pa.int32()),
        }
    )
    stats: dict[str, int] = {}
    out = score_admissions(**parts, model=model, run_id="r", stats=stats)
    assert out.column("charlson_index").to_pylist() == [0, 0, 0]
    assert stats["diagnoses"] == 5
    assert stats["malformed_icd_codes"] == 3  # empty, dotted, an ICD-9 code labelled version 10
    assert stats["unknown_icd_version"] == 1
    assert stats["unmapped_icd_codes"] == 1  # E785 (hyperlipidaemia) is in no Charlson/Elixhauser group


def test_score_lace_uses_charlson_1987_whatever_the_reported_weights(history: dict, trained: tuple) -> None:
    _, model, _ = trained
    parts = partition(history, 1)
    hadm = parts["admissions"].column("hadm_id")[0].as_py()
    # heart failure + dementia: Charlson 1987 = 1 + 1 = 2 (C = 2), Quan 2011 = 2 + 2 = 4 (C would be 5)
    parts["diagnoses"] = pa.table(
        {"hadm_id": [hadm, hadm], "icd_code": ["4280", "2900"], "icd_version": pa.array([9, 9], pa.int32())}
    )
    original = score_admissions(**parts, model=model, run_id="r", charlson_weights="charlson1987")
    quan = score_admissions(**parts, model=model, run_id="r", charlson_weights="quan2011")
    assert original.column("charlson_index").to_pylist() == [2]
    assert quan.column("charlson_index").to_pylist() == [4]
    assert quan.column("lace_score").to_pylist() == original.column("lace_score").to_pylist()


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
