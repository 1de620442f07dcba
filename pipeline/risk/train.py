"""Training and evaluation of the risk model, with LACE as the baseline on the same split.

Split (decided here; recorded in the model metadata so ``evaluate`` reproduces it):

* time: a ``cutoff`` on dischtime (default: the ``cutoff_quantile`` of all dischtimes). Training rows are
  discharged before it; calibration and test rows at or after it. A training row's readmission label
  must also be fully observed by the cutoff (dischtime + 30 d <= cutoff), so no label looks past it.
  Mortality labels of training rows may use deaths recorded after the cutoff (a one-year gap would empty
  short data sets); with disjoint patients (below) these are never test patients' outcomes.
* patients: each subject is assigned by a salted hash of subject_id to the training group (share
  ``train_patient_share``) or the holdout group. Training = training group before the cutoff;
  calibration = training group after it; test = holdout group after it. So test patients are unseen in
  training and test admissions are later than every training admission. Holdout admissions before the
  cutoff are not used. With ``patient_disjoint=False`` training uses every patient before the cutoff.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipeline.risk._arrow import SECONDS_PER_DAY, ints, seconds
from pipeline.risk.errors import R009, R012, RiskError
from pipeline.risk.features import build_features
from pipeline.risk.indices import charlson, lace
from pipeline.risk.labels import READMIT_DAYS, TARGETS, build_labels
from pipeline.risk.metrics import calibration_curve, plot_calibration, summary
from pipeline.risk.model import MODEL_NAME, RiskModel, resolve_device

log = logging.getLogger(__name__)

MIN_TRAIN_ROWS = 20
MIN_POSITIVES = 3


@dataclass(frozen=True)
class SplitConfig:
    cutoff: float | None = None  # seconds since epoch; None → cutoff_quantile of dischtime
    cutoff_quantile: float = 0.6
    train_patient_share: float = 0.6
    patient_disjoint: bool = True
    salt: int = 0


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # [n, len(TARGETS)] bool, per target (label eligibility included)
    calibration: np.ndarray
    test: np.ndarray
    cutoff: float


def patient_fraction(subject_id: np.ndarray, salt: int = 0) -> np.ndarray:
    """A stable pseudo-random number in [0, 1) per subject (splitmix64 of subject_id + salt)."""
    with np.errstate(over="ignore"):
        x = subject_id.astype(np.uint64) + np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _dischtime_seconds(labels: pa.Table) -> np.ndarray:
    return seconds(labels.column("dischtime"))


def make_split(labels: pa.Table, config: SplitConfig) -> Split:
    disch = _dischtime_seconds(labels)
    cutoff = (
        config.cutoff if config.cutoff is not None else float(np.nanquantile(disch, config.cutoff_quantile))
    )
    in_train_group = (
        patient_fraction(ints(labels.column("subject_id")), config.salt) < config.train_patient_share
    )
    eligible = np.column_stack(
        [
            np.asarray(labels.column(f"{t}_eligible").to_numpy(zero_copy_only=False), dtype=bool)
            for t in TARGETS
        ]
    )
    before, after = disch < cutoff, disch >= cutoff
    train_rows = before & (in_train_group if config.patient_disjoint else True)
    label_closed = np.column_stack([disch + READMIT_DAYS * SECONDS_PER_DAY <= cutoff, np.ones_like(before)])
    train = eligible & train_rows[:, None] & label_closed
    calibration = eligible & (after & in_train_group)[:, None]
    test = eligible & (after & ~in_train_group)[:, None]
    return Split(train, calibration, test, cutoff)


def _fit_linear(
    z: np.ndarray, y: np.ndarray, mask: np.ndarray, *, l2: float, max_iter: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked two-target logistic regression, full batch L-BFGS (deterministic, small data)."""
    torch.manual_seed(seed)
    x = torch.as_tensor(z, dtype=torch.float64)
    target = torch.as_tensor(y, dtype=torch.float64)
    weight_mask = torch.as_tensor(mask, dtype=torch.float64)
    rates = (target * weight_mask).sum(0) / weight_mask.sum(0).clamp(min=1)
    bias = torch.logit(rates.clamp(1e-3, 1 - 1e-3)).clone().requires_grad_(True)
    weight = torch.zeros((len(TARGETS), z.shape[1]), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = x @ weight.T + bias
        loss_each = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        loss = ((loss_each * weight_mask).sum(0) / weight_mask.sum(0).clamp(min=1)).sum()
        loss = loss + l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach(), bias.detach()


def _fit_platt(score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling p = sigmoid(a·score + b), fitted by maximum likelihood; identity when not fittable."""
    if len(y) < 10 or y.min() == y.max():
        return 1.0, 0.0
    s = torch.as_tensor(score, dtype=torch.float64)
    t = torch.as_tensor(y, dtype=torch.float64)
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([params], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * s + params[1], t)
        loss.backward()
        return loss

    optimiser.step(closure)
    a, b = params.detach().tolist()
    return float(a), float(b)


def _label_matrix(labels: pa.Table) -> np.ndarray:
    return np.column_stack(
        [np.asarray(labels.column(t).to_numpy(zero_copy_only=False), dtype=np.float64) for t in TARGETS]
    )


def _lace_scores(admissions: pa.Table, diagnoses: pa.Table, charlson_weights: str) -> np.ndarray:
    index = charlson(diagnoses, charlson_weights, hadm_ids=admissions.column("hadm_id").combine_chunks())
    table = lace(admissions, index, admissions)
    return np.asarray(table.column("lace_score").to_numpy(), dtype=np.float64)


def _evaluate_rows(
    model: RiskModel,
    features: pa.Table,
    labels: pa.Table,
    lace_scores: np.ndarray,
    rows: np.ndarray,
    out_dir: Path | None,
) -> dict[str, Any]:
    probability = model.predict_proba(features)
    y = _label_matrix(labels)
    result: dict[str, Any] = {}
    plots: dict[str, str] = {}
    lace_a, lace_b = model.metadata.get("lace_platt", [1.0, 0.0])
    for k, target in enumerate(TARGETS):
        sel = rows[:, k]
        result[target] = summary(y[sel, k], probability[sel, k])
        curves = {MODEL_NAME: calibration_curve(y[sel, k], probability[sel, k])}
        result[target]["calibration"] = curves[MODEL_NAME]
        if target == "readmit_30d":
            lace_probability = 1.0 / (1.0 + np.exp(-(lace_a * lace_scores[sel] + lace_b)))
            baseline = summary(y[sel, k], lace_scores[sel])  # LACE as a ranking
            baseline["brier"] = summary(y[sel, k], lace_probability)[
                "brier"
            ]  # after Platt on calibration rows
            result["lace_readmit_30d"] = baseline
            curves["LACE (Platt)"] = calibration_curve(y[sel, k], lace_probability)
        if out_dir is not None and sel.any():
            path = plot_calibration(
                Path(out_dir) / f"{target}_calibration.png", curves, f"{target} (n={sel.sum()})"
            )
            plots[target] = str(path)
    result["plots"] = plots
    return result


def train_risk_model(
    admissions: pa.Table,
    patients: pa.Table,
    diagnoses: pa.Table,
    labs: pa.Table,
    prescriptions: pa.Table,
    note_entities: pa.Table | None = None,
    *,
    out_dir: Path,
    cutoff: datetime | None = None,
    cutoff_quantile: float = 0.6,
    train_patient_share: float = 0.6,
    patient_disjoint: bool = True,
    split_salt: int = 0,
    charlson_weights: str = "charlson1987",
    data_end: datetime | None = None,
    death_data_end: datetime | date | None = None,
    l2: float = 0.5,  # strong ridge: ~60 correlated features, a few hundred positives
    max_iter: int = 200,
    seed: int = 0,
    model_version: str | None = None,
) -> dict[str, Any]:
    """Train, calibrate, evaluate and save the risk model; returns the test metrics.

    Inputs are the whole history: every admission of the subjects (it is both the rows to learn from and
    the prior-admission history), their patients, and the diagnoses, labs, prescriptions and (optional)
    note_entities of those admissions. Writes ``out_dir/model.safetensors``, ``model.json``,
    ``metrics.json`` and one calibration PNG per target.
    """
    out_dir = Path(out_dir)
    features = build_features(
        admissions,
        patients,
        diagnoses,
        labs,
        prescriptions,
        admissions,
        note_entities,
        charlson_weights=charlson_weights,
    )
    labels = build_labels(admissions, patients, data_end=data_end, death_data_end=death_data_end)
    lace_scores = _lace_scores(admissions, diagnoses, charlson_weights)
    cutoff_seconds = None if cutoff is None else (cutoff - datetime(1970, 1, 1)).total_seconds()
    config = SplitConfig(cutoff_seconds, cutoff_quantile, train_patient_share, patient_disjoint, split_salt)
    split = make_split(labels, config)
    y = _label_matrix(labels)
    for k, target in enumerate(TARGETS):
        rows = int(split.train[:, k].sum())
        positives = int(y[split.train[:, k], k].sum())
        if rows < MIN_TRAIN_ROWS or positives < MIN_POSITIVES or positives == rows:
            raise RiskError(R009.format(target=target, n=rows, positives=positives))

    feature_names = tuple(c for c in features.column_names if c != "hadm_id")
    scaffold = RiskModel(
        torch.zeros(len(TARGETS), len(feature_names)),
        torch.zeros(len(TARGETS)),
        feature_names,
        np.zeros(len(feature_names)),
        np.ones(len(feature_names)),
        np.zeros(len(feature_names)),
    )
    raw = scaffold.raw_matrix(features)
    any_train = split.train.any(axis=1)
    with warnings.catch_warnings():  # an all-missing column (e.g. NER never ran) is handled just below
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nanmedian(np.where(any_train[:, None], raw, np.nan), axis=0)
    medians = np.where(np.isfinite(medians), medians, 0.0)  # a feature never observed in training is constant
    filled = np.where(np.isnan(raw), medians, raw)
    means = filled[any_train].mean(axis=0)
    stds = filled[any_train].std(axis=0)
    stds = np.where(stds > 1e-9, stds, 1.0)
    z = (filled - means) / stds

    weight, bias = _fit_linear(
        z[any_train], np.nan_to_num(y[any_train]), split.train[any_train], l2=l2, max_iter=max_iter, seed=seed
    )
    logits = (torch.as_tensor(z) @ weight.T + bias).numpy()
    platt = []
    for k, _target in enumerate(TARGETS):
        sel = split.calibration[:, k]
        platt.append(_fit_platt(logits[sel, k], y[sel, k]))
    a = torch.tensor([p[0] for p in platt], dtype=torch.float64)
    c = torch.tensor([p[1] for p in platt], dtype=torch.float64)
    calibrated_weight, calibrated_bias = weight * a[:, None], bias * a + c
    readmit = TARGETS.index("readmit_30d")
    lace_platt = _fit_platt(
        lace_scores[split.calibration[:, readmit]], y[split.calibration[:, readmit], readmit]
    )

    disch = _dischtime_seconds(labels)
    train_disch = disch[any_train]
    metadata: dict[str, Any] = {
        "model_name": MODEL_NAME,
        "charlson_weights": charlson_weights,
        "split": {**asdict(config), "cutoff": split.cutoff},
        "training_window": {
            "first_dischtime": _iso(np.nanmin(train_disch)),
            "last_dischtime": _iso(np.nanmax(train_disch)),
            "cutoff": _iso(split.cutoff),
        },
        "rows": {
            part: {t: int(getattr(split, part)[:, k].sum()) for k, t in enumerate(TARGETS)}
            for part in ("train", "calibration", "test")
        },
        "platt": {t: list(p) for t, p in zip(TARGETS, platt, strict=True)},
        "lace_platt": list(lace_platt),
        "hyperparameters": {"l2": l2, "max_iter": max_iter, "seed": seed},
        "ner_features_trained": note_entities is not None,
    }
    if model_version is not None:
        metadata["model_version"] = model_version
    model = RiskModel(
        calibrated_weight.float(), calibrated_bias.float(), feature_names, means, stds, medians, metadata
    )
    metrics = _evaluate_rows(model, features, labels, lace_scores, split.test, out_dir)
    metrics["split"] = {"cutoff": _iso(split.cutoff), **metadata["rows"]}
    model.metadata["metrics"] = {k: v for k, v in metrics.items() if k in (*TARGETS, "lace_readmit_30d")}
    model.save(out_dir)
    metrics["model_version"] = model.version
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True), encoding="utf-8")
    log.info("risk model %s trained: %s", model.version, json.dumps(metadata["rows"]))
    return metrics


def _iso(secs: float) -> str:
    return (datetime(1970, 1, 1) + timedelta(seconds=float(secs))).isoformat()


def evaluate(
    admissions: pa.Table,
    patients: pa.Table,
    diagnoses: pa.Table,
    labs: pa.Table,
    prescriptions: pa.Table,
    note_entities: pa.Table | None = None,
    *,
    model: RiskModel | Path | str,
    out_dir: Path | None = None,
    subset: str = "test",
    data_end: datetime | None = None,
    death_data_end: datetime | date | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """AUROC, AUPRC, Brier and calibration of a saved model and of LACE, on the same rows.

    ``subset="test"`` rebuilds the training run's test split from the model metadata (same history
    tables as training); ``subset="all"`` uses every eligible admission (e.g. new data after training).
    """
    if subset not in ("test", "all"):
        raise RiskError(R012.format(subset=subset))
    if not isinstance(model, RiskModel):
        model = RiskModel.load(model, device)
    else:
        resolve_device(device)
    features = build_features(
        admissions,
        patients,
        diagnoses,
        labs,
        prescriptions,
        admissions,
        note_entities,
        charlson_weights=model.charlson_weights,
    )
    labels = build_labels(admissions, patients, data_end=data_end, death_data_end=death_data_end)
    lace_scores = _lace_scores(admissions, diagnoses, model.charlson_weights)
    if subset == "test":
        stored = dict(model.metadata.get("split", {}))
        rows = make_split(labels, SplitConfig(**stored)).test
    else:
        rows = np.column_stack(
            [
                np.asarray(labels.column(f"{t}_eligible").to_numpy(zero_copy_only=False), dtype=bool)
                for t in TARGETS
            ]
        )
    result = _evaluate_rows(model, features, labels, lace_scores, rows, out_dir)
    result["model_version"] = model.version
    result["subset"] = subset
    return result
