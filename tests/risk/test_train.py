"""Training learns the planted signal, beats LACE, is calibrated and evaluates on the same split."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.risk.features import build_features
from pipeline.risk.labels import TARGETS, build_labels
from pipeline.risk.metrics import auprc, auroc, brier
from pipeline.risk.model import RiskModel
from pipeline.risk.train import (
    L2_GRID,
    SplitConfig,
    _censored_mortality,
    evaluate,
    make_split,
    paired_bootstrap_auroc_difference,
    train_risk_model,
)
from tests.risk.conftest import at


def test_train_beats_lace_and_reports_metrics(trained: tuple) -> None:
    metrics, _, out_dir = trained
    for key in ("readmit_30d", "mortality_1y", "lace_readmit_30d"):
        assert {"auroc", "auprc", "brier"} <= set(metrics[key])
    assert metrics["readmit_30d"]["auroc"] > 0.7
    assert metrics["readmit_30d"]["auroc"] > metrics["lace_readmit_30d"]["auroc"] + 0.1
    assert metrics["mortality_1y"]["auroc"] > 0.6
    for target in ("readmit_30d", "mortality_1y"):
        assert (Path(out_dir) / f"{target}_calibration.png").stat().st_size > 1000
    meta = json.loads((Path(out_dir) / "model.json").read_text())
    assert {"feature_names", "means", "stds", "medians", "sha256", "training_window", "metrics"} <= set(meta)


def test_train_learns_planted_features(trained: tuple) -> None:
    _, model, _ = trained
    weight = dict(zip(model.feature_names, model.weight[0].tolist(), strict=True))
    assert weight["lab_creatinine_last"] > 0.3
    assert weight["medication_count"] > 0.3
    # heart failure is also all of charlson_index and elixhauser_vw here: the weight is shared by the three
    assert weight["elix_chf"] + weight["charlson_index"] + weight["elixhauser_vw"] > 0.15
    strongest = sorted(weight, key=lambda name: -abs(weight[name]))[:3]
    assert {"lab_creatinine_last", "medication_count"} <= set(strongest)


def test_train_calibrated_on_holdout(trained: tuple) -> None:
    metrics, _, _ = trained
    curve = metrics["readmit_30d"]["calibration"]
    gap = np.abs(np.array(curve["predicted"]) - np.array(curve["observed"]))
    assert np.average(gap, weights=curve["count"]) < 0.06


def test_train_split_is_time_ordered_and_patient_disjoint(history: dict) -> None:
    labels = build_labels(history["admissions"], history["patients"])
    split = make_split(labels, SplitConfig())
    disch = labels.column("dischtime").cast("int64").to_numpy()
    subject = labels.column("subject_id").to_numpy()
    train, test = split.train.any(axis=1), split.test.any(axis=1)
    assert disch[train].max() < disch[test].min()
    assert not set(subject[train]) & set(subject[test])
    readmit_train = split.train[:, 0]
    assert (disch[readmit_train] + 30 * 86_400 <= split.cutoff).all()


def test_train_evaluate_reproduces_the_test_split(history: dict, trained: tuple, tmp_path: Path) -> None:
    metrics, _, out_dir = trained
    again = evaluate(**history, model=out_dir, out_dir=tmp_path, device="cpu")
    assert again["readmit_30d"]["auroc"] == metrics["readmit_30d"]["auroc"]
    assert again["lace_readmit_30d"]["auroc"] == metrics["lace_readmit_30d"]["auroc"]
    assert (tmp_path / "readmit_30d_calibration.png").is_file()
    everything = evaluate(**history, model=out_dir, subset="all", device="cpu")
    assert everything["readmit_30d"]["n"] > again["readmit_30d"]["n"]


def test_metrics_hand_computed() -> None:
    y = [0, 0, 1, 1]
    assert auroc(y, [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert auroc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert auroc([1, 1], [0.1, 0.2]) is None
    assert auprc(y, [0.1, 0.4, 0.35, 0.8]) == (0.5 * 1.0 + 0.5 * (2 / 3))
    assert brier(y, [0, 0, 1, 1]) == 0.0


def _before_cutoff(history: dict, cutoff: datetime) -> dict:
    """What was known at ``cutoff``: admissions begun before it, and only deaths whose day had passed."""
    admissions = history["admissions"]
    known = pc.less(admissions.column("admittime"), pa.scalar(cutoff, pa.timestamp("s")))
    patients = history["patients"]
    dod = patients.column("dod")
    seen = pc.less_equal(
        pc.cast(dod, pa.timestamp("s")), pa.scalar(cutoff - timedelta(days=1), pa.timestamp("s"))
    )
    patients = patients.set_column(
        patients.schema.get_field_index("dod"), "dod", pc.if_else(pc.fill_null(seen, False), dod, None)
    )
    return {**history, "admissions": admissions.filter(known), "patients": patients}


def test_train_uses_nothing_after_the_cutoff(history: dict, tmp_path: Path) -> None:
    """Deaths and admissions after the cutoff change neither the chosen ridge nor the fitted weights."""
    labels = build_labels(history["admissions"], history["patients"])
    cutoff_seconds = make_split(labels, SplitConfig()).cutoff
    cutoff = datetime(1970, 1, 1) + timedelta(seconds=int(cutoff_seconds))
    # the history really has deaths after the cutoff of patients discharged before it (else no test)
    dod = labels.column("dod").cast(pa.timestamp("s")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    disch = labels.column("dischtime").cast(pa.int64()).to_numpy()
    late_deaths = (disch < cutoff_seconds) & (np.nan_to_num(dod.astype(float), nan=0) > cutoff_seconds)
    assert late_deaths.sum() > 20

    full = train_risk_model(**history, out_dir=tmp_path / "full", cutoff=cutoff)
    known = train_risk_model(**_before_cutoff(history, cutoff), out_dir=tmp_path / "known", cutoff=cutoff)
    meta = {name: json.loads((tmp_path / name / "model.json").read_text()) for name in ("full", "known")}
    assert meta["full"]["hyperparameters"]["selection"] == meta["known"]["hyperparameters"]["selection"]
    assert meta["full"]["rows"]["train"] == meta["known"]["rows"]["train"]
    assert meta["full"]["medians"] == meta["known"]["medians"]
    models = {name: RiskModel.load(tmp_path / name, "cpu") for name in ("full", "known")}
    for k, target in enumerate(TARGETS):
        # the saved weights are Platt-scaled (fitted after the cutoff): undo the scale to compare the fits
        raw = {
            name: models[name].weight[k].double().numpy() / meta[name]["platt"][target][0] for name in models
        }
        np.testing.assert_allclose(raw["full"], raw["known"], rtol=1e-4, atol=1e-6)
    assert full["readmit_30d"]["n"] > 0 and known["readmit_30d"]["n"] < full["readmit_30d"]["n"]


def test_train_mortality_follow_up_is_censored_at_the_cutoff() -> None:
    day = 86_400.0
    labels = pa.table(
        {
            "dischtime": pa.array([at(0), at(0), at(0), at(300)], pa.timestamp("s")),
            "dod": pa.array([at(50).date(), at(150).date(), None, at(310).date()], pa.date32()),
        }
    )
    cutoff = (at(100) - datetime(1970, 1, 1)).total_seconds()
    event, exposure = _censored_mortality(labels, cutoff)
    assert event.tolist() == [1.0, 0.0, 0.0, 0.0]  # the death on day 150 is after the cutoff: survival
    assert exposure[1] == pytest.approx(exposure[2]) == pytest.approx(100 * day / (365 * day))
    assert exposure[0] == pytest.approx(50.5 / 365)


def test_train_chooses_ridge_on_the_inner_training_split(history: dict, trained: tuple) -> None:
    _, model, _ = trained
    labels = build_labels(history["admissions"], history["patients"])
    split = make_split(labels, SplitConfig())
    disch = labels.column("dischtime").cast(pa.int64()).to_numpy()
    assert not (split.inner_train & ~split.train).any() and not (split.inner_validation & ~split.train).any()
    assert not (split.inner_train & split.inner_validation).any()
    assert (disch[split.inner_train[:, 0]] + 30 * 86_400 <= split.inner_cutoff).all()
    assert (disch[split.inner_validation.any(axis=1)] >= split.inner_cutoff).all()
    assert split.inner_cutoff < split.cutoff
    hyper = model.metadata["hyperparameters"]
    for target in TARGETS:
        chosen = hyper["selection"][target]
        assert chosen["chosen"] in L2_GRID and hyper["l2"][target] == chosen["chosen"]
        losses = {float(k): v for k, v in chosen["validation_loss"].items()}
        assert set(losses) == set(L2_GRID) and losses[chosen["chosen"]] == min(losses.values())


def test_train_bootstrap_interval_of_the_auroc_difference() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.2).astype(float)
    strong = y + rng.normal(0, 0.6, 400)
    weak = y + rng.normal(0, 2.0, 400)
    first = paired_bootstrap_auroc_difference(y, strong, weak)
    assert first == paired_bootstrap_auroc_difference(y, strong, weak)  # fixed seed: reproducible
    low, high = first["ci95"]
    assert 0 < low < first["difference"] < high
    assert first["difference"] == pytest.approx(auroc(y, strong) - auroc(y, weak))
    same = paired_bootstrap_auroc_difference(y, strong, strong)
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0]
    reversed_ci = paired_bootstrap_auroc_difference(y, weak, strong)["ci95"]
    assert reversed_ci == pytest.approx([-high, -low])


def test_train_reports_the_interval_against_lace(trained: tuple, history: dict) -> None:
    metrics, model, _ = trained
    versus = metrics["readmit_30d_vs_lace"]
    assert versus["auroc_difference"] == pytest.approx(
        metrics["readmit_30d"]["auroc"] - metrics["lace_readmit_30d"]["auroc"]
    )
    assert versus["ci95"][0] > 0  # the planted signal is invisible to LACE
    assert model.metadata["metrics"]["readmit_30d_vs_lace"] == versus


def test_train_without_ner_scores_the_same_with_or_without_entities(history: dict, trained: tuple) -> None:
    _, model, _ = trained
    assert model.metadata["ner_features_trained"] is False and "NER" in model.metadata["notes"][0]
    admissions = history["admissions"].slice(0, 50)
    hadm = admissions.column("hadm_id").to_pylist()
    entities = pa.table(
        {
            "hadm_id": pa.array(hadm[:30], pa.int64()),
            "label": ["PROBLEM"] * 30,
            **{f: [False] * 30 for f in ("is_negated", "is_uncertain", "is_hypothetical", "is_family")},
        }
    )
    inputs = {k: history[k] for k in ("patients", "diagnoses", "labs", "prescriptions")}
    without = build_features(admissions, **inputs, prior_admissions=history["admissions"])
    with_ner = build_features(
        admissions, **inputs, prior_admissions=history["admissions"], note_entities=entities
    )
    assert with_ner.column("ner_missing").to_pylist()[:30] == [0.0] * 30
    np.testing.assert_array_equal(model.predict_proba(without), model.predict_proba(with_ner))
    # NER ran on some admissions only: the others stay missing, as in history loaded without NER
    partial = build_features(
        admissions,
        **inputs,
        prior_admissions=history["admissions"],
        note_entities=entities,
        ner_hadm_ids=hadm[:30],
    )
    assert partial.column("ner_missing").to_pylist() == [0.0] * 30 + [1.0] * 20
    assert partial.column("ner_problem_count").null_count == 20
