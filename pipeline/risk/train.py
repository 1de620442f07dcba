"""Training and evaluation of the risk model, with LACE as the baseline on the same split.

Split (decided here; recorded in the model metadata so ``evaluate`` reproduces it):

* time: a ``cutoff`` on dischtime (default: the ``cutoff_quantile`` of all dischtimes). Training rows are
  discharged before it; calibration and test rows at or after it. No training label looks past the
  cutoff: a readmission label is used only when its 30-day window closes before the cutoff
  (dischtime + 30 d <= cutoff); the 1-year mortality head is fitted on follow-up *censored at the cutoff*
  (an exponential, constant-hazard model: a death after the cutoff counts as survival up to the cutoff),
  because a year of history would otherwise leave no training row whose 365-day window has closed.
* patients: each subject is assigned by a salted hash of subject_id to the training group (share
  ``train_patient_share``) or the holdout group. Training = training group before the cutoff;
  calibration = training group after it; test = holdout group after it. So test patients are unseen in
  training and test admissions are later than every training admission. Holdout admissions before the
  cutoff are not used. With ``patient_disjoint=False`` training uses every patient before the cutoff.
* hyper-parameters: the ridge strength of each target is chosen on an *inner* time split of the training
  rows only (inner cutoff at the ``inner_quantile`` of their dischtimes, the same label-closure rules),
  by held-out log loss (readmission) or censored exponential deviance (mortality). Calibration and test
  rows never influence it. The model is then refitted on all training rows with the chosen strength.

Evaluation reports AUROC/AUPRC/Brier per target, LACE alone on the same readmission rows, and a paired
(stratified) bootstrap 95 % interval of the AUROC difference model − LACE with a fixed seed.
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

from pipeline.device import resolve_device
from pipeline.risk._arrow import SECONDS_PER_DAY, ints, seconds
from pipeline.risk.errors import R009, R012, RiskError
from pipeline.risk.features import NER_FEATURES, build_features
from pipeline.risk.indices import LACE_CHARLSON_WEIGHTS, charlson, lace
from pipeline.risk.labels import MORTALITY_DAYS, READMIT_DAYS, TARGETS, build_labels
from pipeline.risk.metrics import auroc, calibration_curve, plot_calibration, summary
from pipeline.risk.model import MODEL_NAME, RiskModel

log = logging.getLogger(__name__)

MIN_TRAIN_ROWS = 20
MIN_POSITIVES = 3
# ridge strengths tried on the inner validation split (penalty l2 * ||w||^2 on standardised features)
L2_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
DEFAULT_L2 = 0.1  # used only when the inner split is too small to choose (recorded in the metadata)
MIN_INNER_POSITIVES = 10
BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 20_240_601
YEAR_SECONDS = MORTALITY_DAYS * SECONDS_PER_DAY


@dataclass(frozen=True)
class SplitConfig:
    cutoff: float | None = None  # seconds since epoch; None → cutoff_quantile of dischtime
    cutoff_quantile: float = 0.6
    train_patient_share: float = 0.6
    patient_disjoint: bool = True
    salt: int = 0
    inner_quantile: float = 0.7  # inner validation cutoff, as a quantile of the training dischtimes


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # [n, len(TARGETS)] bool, per target (label eligibility included)
    calibration: np.ndarray
    test: np.ndarray
    cutoff: float
    inner_train: np.ndarray  # subsets of ``train`` for choosing hyper-parameters
    inner_validation: np.ndarray
    inner_cutoff: float


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


def _eligible(labels: pa.Table) -> np.ndarray:
    return np.column_stack(
        [
            np.asarray(labels.column(f"{t}_eligible").to_numpy(zero_copy_only=False), dtype=bool)
            for t in TARGETS
        ]
    )


def _label_closed(disch: np.ndarray, at: float) -> np.ndarray:
    """Per target: may a row discharged at ``disch`` be a training row for a model fitted at ``at``?

    Readmission: its whole 30-day window has closed. Mortality: discharged before ``at``; its follow-up
    is censored at ``at`` by the exponential fit, so no death after ``at`` is used.
    """
    return np.column_stack([disch + READMIT_DAYS * SECONDS_PER_DAY <= at, disch < at])


def make_split(labels: pa.Table, config: SplitConfig) -> Split:
    disch = _dischtime_seconds(labels)
    cutoff = (
        config.cutoff if config.cutoff is not None else float(np.nanquantile(disch, config.cutoff_quantile))
    )
    in_train_group = (
        patient_fraction(ints(labels.column("subject_id")), config.salt) < config.train_patient_share
    )
    eligible = _eligible(labels)
    before, after = disch < cutoff, disch >= cutoff
    train_rows = before & (in_train_group if config.patient_disjoint else True)
    train = eligible & train_rows[:, None] & _label_closed(disch, cutoff)
    calibration = eligible & (after & in_train_group)[:, None]
    test = eligible & (after & ~in_train_group)[:, None]
    any_train = train.any(axis=1)
    inner_cutoff = (
        float(np.nanquantile(disch[any_train], config.inner_quantile)) if any_train.any() else cutoff
    )
    inner_train = train & _label_closed(disch, inner_cutoff)
    inner_validation = train & (disch >= inner_cutoff)[:, None]
    return Split(train, calibration, test, cutoff, inner_train, inner_validation, inner_cutoff)


# --- fitting -------------------------------------------------------------------------------------
def _lbfgs(params: list[torch.Tensor], loss_fn: Any, max_iter: int) -> None:
    optimiser = torch.optim.LBFGS(params, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimiser.step(closure)


def _fit_logistic(z: np.ndarray, y: np.ndarray, *, l2: float, max_iter: int) -> tuple[np.ndarray, float]:
    """Ridge logistic regression, full batch L-BFGS (deterministic, small data)."""
    x = torch.as_tensor(z, dtype=torch.float64)
    target = torch.as_tensor(y, dtype=torch.float64)
    rate = float(target.mean().clamp(1e-3, 1 - 1e-3))
    bias = torch.tensor(np.log(rate / (1 - rate)), dtype=torch.float64, requires_grad=True)
    weight = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)

    def loss() -> torch.Tensor:
        logits = x @ weight + bias
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target) + l2 * (weight**2).sum()

    _lbfgs([weight, bias], loss, max_iter)
    return weight.detach().numpy(), float(bias.detach())


def _fit_exponential(
    z: np.ndarray, event: np.ndarray, exposure_years: np.ndarray, *, l2: float, max_iter: int
) -> tuple[np.ndarray, float]:
    """Ridge exponential (constant hazard) regression on censored follow-up: log hazard = b + w·z."""
    x = torch.as_tensor(z, dtype=torch.float64)
    e = torch.as_tensor(event, dtype=torch.float64)
    t = torch.as_tensor(exposure_years, dtype=torch.float64)
    rate = max(float(e.sum()), 0.5) / max(float(t.sum()), 1e-6)
    bias = torch.tensor(np.log(rate), dtype=torch.float64, requires_grad=True)
    weight = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)

    def loss() -> torch.Tensor:
        eta = x @ weight + bias
        return (torch.exp(eta) * t - e * eta).mean() + l2 * (weight**2).sum()

    _lbfgs([weight, bias], loss, max_iter)
    return weight.detach().numpy(), float(bias.detach())


def _log_loss(y: np.ndarray, logit: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, logit) - y * logit))


def _exponential_deviance(event: np.ndarray, exposure_years: np.ndarray, eta: np.ndarray) -> float:
    return float(np.mean(np.exp(eta) * exposure_years - event * eta))


def _censored_mortality(labels: pa.Table, at: float) -> tuple[np.ndarray, np.ndarray]:
    """(event, exposure in years) of the 1-year mortality follow-up of every row, censored at ``at``.

    A death counts only when its whole day is before ``at`` and within 365 days of the discharge day;
    exposure runs from discharge to the death, the end of the year or ``at``, whichever comes first.
    """
    disch = _dischtime_seconds(labels)
    discharge_day = np.floor(disch / SECONDS_PER_DAY) * SECONDS_PER_DAY
    dod = seconds(labels.column("dod"))
    year_end = discharge_day + YEAR_SECONDS
    event = (dod >= discharge_day) & (dod <= year_end) & (dod + SECONDS_PER_DAY <= at)
    end = np.minimum(np.minimum(year_end, at), np.where(event, dod + SECONDS_PER_DAY / 2, np.inf))
    exposure = np.maximum(end - disch, SECONDS_PER_DAY / 2) / YEAR_SECONDS
    return event.astype(np.float64), exposure


@dataclass(frozen=True)
class _Normaliser:
    medians: np.ndarray
    means: np.ndarray
    stds: np.ndarray

    @classmethod
    def fit(cls, raw: np.ndarray, rows: np.ndarray) -> _Normaliser:
        with warnings.catch_warnings():  # an all-missing column (e.g. NER never ran) is handled just below
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(np.where(rows[:, None], raw, np.nan), axis=0)
        medians = np.where(np.isfinite(medians), medians, 0.0)  # never observed in training: constant
        filled = np.where(np.isnan(raw[rows]), medians, raw[rows])
        stds = filled.std(axis=0)
        return cls(medians, filled.mean(axis=0), np.where(stds > 1e-9, stds, 1.0))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return (np.where(np.isnan(raw), self.medians, raw) - self.means) / self.stds


def _fit_target(
    k: int,
    raw: np.ndarray,
    y: np.ndarray,
    mortality: tuple[np.ndarray, np.ndarray],
    rows: np.ndarray,
    *,
    l2: float,
    max_iter: int,
) -> tuple[np.ndarray, float]:
    """Fit target ``k`` on ``rows`` of already standardised ``raw`` (readmission logistic, mortality hazard)."""
    if TARGETS[k] == "mortality_1y":
        event, exposure = mortality
        return _fit_exponential(raw[rows], event[rows], exposure[rows], l2=l2, max_iter=max_iter)
    return _fit_logistic(raw[rows], y[rows, k], l2=l2, max_iter=max_iter)


def _choose_l2(
    raw: np.ndarray, labels: pa.Table, y: np.ndarray, split: Split, *, max_iter: int
) -> tuple[list[float], dict[str, Any]]:
    """Per target, the ridge strength with the best loss on the inner validation rows (training period)."""
    inner_any = split.inner_train.any(axis=1)
    if not inner_any.any():
        return [DEFAULT_L2] * len(TARGETS), {
            t: {"chosen": DEFAULT_L2, "reason": "no inner rows"} for t in TARGETS
        }
    normalise = _Normaliser.fit(raw, inner_any)
    z = normalise(raw)
    inner_mortality = _censored_mortality(labels, split.inner_cutoff)
    outer_mortality = _censored_mortality(labels, split.cutoff)
    chosen: list[float] = []
    report: dict[str, Any] = {}
    for k, target in enumerate(TARGETS):
        fit_rows, val_rows = split.inner_train[:, k], split.inner_validation[:, k]
        if target == "mortality_1y":
            fit_pos, val_pos = inner_mortality[0][fit_rows].sum(), outer_mortality[0][val_rows].sum()
        else:
            fit_pos, val_pos = y[fit_rows, k].sum(), y[val_rows, k].sum()
        if fit_rows.sum() < MIN_TRAIN_ROWS or fit_pos < MIN_POSITIVES or val_pos < MIN_INNER_POSITIVES:
            chosen.append(DEFAULT_L2)
            report[target] = {
                "chosen": DEFAULT_L2,
                "reason": f"inner split too small ({int(fit_rows.sum())} fit rows, {int(fit_pos)} positives; "
                f"{int(val_rows.sum())} validation rows, {int(val_pos)} positives)",
            }
            continue
        losses = {}
        for l2 in L2_GRID:
            weight, bias = _fit_target(k, z, y, inner_mortality, fit_rows, l2=l2, max_iter=max_iter)
            score = z[val_rows] @ weight + bias
            losses[l2] = (
                _exponential_deviance(outer_mortality[0][val_rows], outer_mortality[1][val_rows], score)
                if target == "mortality_1y"
                else _log_loss(y[val_rows, k], score)
            )
        best = min(L2_GRID, key=lambda value: (round(losses[value], 12), -value))  # ties → stronger ridge
        chosen.append(best)
        report[target] = {
            "chosen": best,
            "criterion": "exponential deviance" if target == "mortality_1y" else "log loss",
            "validation_loss": {str(value): round(loss, 6) for value, loss in losses.items()},
            "rows": {"fit": int(fit_rows.sum()), "validation": int(val_rows.sum())},
            "positives": {"fit": int(fit_pos), "validation": int(val_pos)},
        }
    return chosen, report


def _fit_platt(score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling p = sigmoid(a·score + b), fitted by maximum likelihood; identity when not fittable."""
    if len(y) < 10 or y.min() == y.max():
        return 1.0, 0.0
    s = torch.as_tensor(score, dtype=torch.float64)
    t = torch.as_tensor(y, dtype=torch.float64)
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    _lbfgs(
        [params],
        lambda: torch.nn.functional.binary_cross_entropy_with_logits(params[0] * s + params[1], t),
        100,
    )
    a, b = params.detach().tolist()
    return float(a), float(b)


def _label_matrix(labels: pa.Table) -> np.ndarray:
    return np.column_stack(
        [np.asarray(labels.column(t).to_numpy(zero_copy_only=False), dtype=np.float64) for t in TARGETS]
    )


def _lace_scores(admissions: pa.Table, diagnoses: pa.Table) -> np.ndarray:
    # LACE was derived with the Charlson 1987 weights, whatever weights the stage reports
    index = charlson(diagnoses, LACE_CHARLSON_WEIGHTS, hadm_ids=admissions.column("hadm_id").combine_chunks())
    table = lace(admissions, index, admissions)
    return np.asarray(table.column("lace_score").to_numpy(), dtype=np.float64)


# --- evaluation ----------------------------------------------------------------------------------
def paired_bootstrap_auroc_difference(
    y: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    *,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """AUROC(a) − AUROC(b) on the same rows, with a paired, outcome-stratified bootstrap 95 % interval.

    Each replicate resamples positives and negatives separately with replacement (so every replicate has
    both classes) and scores both models on the *same* resample, which keeps their correlation.

    >>> out = paired_bootstrap_auroc_difference([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], [0.2, 0.9, 0.1, 0.8])
    >>> out["difference"], out["ci95"][1] <= 1.0
    (0.75, True)
    """
    y = np.asarray(y, dtype=np.float64)
    a, b = np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(a) & np.isfinite(b)
    y, a, b = y[keep], a[keep], b[keep]
    point_a, point_b = auroc(y, a), auroc(y, b)
    base = {"replicates": replicates, "seed": seed, "method": "paired bootstrap, stratified by outcome"}
    if point_a is None or point_b is None:
        return {"difference": None, "ci95": [None, None], **base}
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed)
    pos_draw = rng.integers(0, len(pos), size=(replicates, len(pos)))
    neg_draw = rng.integers(0, len(neg), size=(replicates, len(neg)))
    if len(pos) * len(neg) <= 4_000_000:
        # AUROC of a resample = sum over (positive, negative) pairs of their multiplicities × win(pair)
        pos_counts = _multiplicities(pos_draw, len(pos))
        neg_counts = _multiplicities(neg_draw, len(neg))
        diffs = np.zeros(replicates)
        for sign, s in ((1.0, a), (-1.0, b)):
            wins = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
            diffs += sign * ((pos_counts @ wins) * neg_counts).sum(axis=1)
        diffs /= len(pos) * len(neg)
    else:  # very large evaluation sets: one rank-based AUROC per replicate instead of a pair matrix
        rows = np.concatenate([pos[pos_draw], neg[neg_draw]], axis=1)
        diffs = np.array([auroc(y[r], a[r]) - auroc(y[r], b[r]) for r in rows])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": point_a - point_b, "ci95": [float(low), float(high)], **base}


def _multiplicities(draws: np.ndarray, size: int) -> np.ndarray:
    replicates = draws.shape[0]
    flat = (np.arange(replicates)[:, None] * size + draws).ravel()
    return np.bincount(flat, minlength=replicates * size).reshape(replicates, size).astype(np.float64)


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
            versus = paired_bootstrap_auroc_difference(y[sel, k], probability[sel, k], lace_scores[sel])
            result["readmit_30d_vs_lace"] = {"auroc_difference": versus.pop("difference"), **versus}
            curves["LACE (Platt)"] = calibration_curve(y[sel, k], lace_probability)
        if out_dir is not None and sel.any():
            path = plot_calibration(
                Path(out_dir) / f"{target}_calibration.png", curves, f"{target} (n={sel.sum()})"
            )
            plots[target] = str(path)
    result["plots"] = plots
    return result


# --- entry points --------------------------------------------------------------------------------
def train_risk_model(
    admissions: pa.Table,
    patients: pa.Table,
    diagnoses: pa.Table,
    labs: pa.Table,
    prescriptions: pa.Table,
    note_entities: pa.Table | None = None,
    *,
    out_dir: Path,
    ner_hadm_ids: pa.Array | pa.ChunkedArray | np.ndarray | None = None,
    cutoff: datetime | None = None,
    cutoff_quantile: float = 0.6,
    train_patient_share: float = 0.6,
    patient_disjoint: bool = True,
    split_salt: int = 0,
    inner_quantile: float = 0.7,
    charlson_weights: str = "charlson1987",
    data_end: datetime | None = None,
    death_data_end: datetime | date | None = None,
    l2: float | None = None,
    max_iter: int = 200,
    seed: int = 0,
    model_version: str | None = None,
) -> dict[str, Any]:
    """Train, calibrate, evaluate and save the risk model; returns the test metrics.

    Inputs are the whole history: every admission of the subjects (it is both the rows to learn from and
    the prior-admission history), their patients, and the diagnoses, labs, prescriptions and (optional)
    note_entities of those admissions (``ner_hadm_ids``: the admissions whose notes NER processed).
    ``l2=None`` chooses the ridge strength per target on the inner validation split; a number fixes it.
    Writes ``out_dir/model.safetensors``, ``model.json``, ``metrics.json`` and one calibration PNG per target.
    """
    torch.manual_seed(seed)
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
        ner_hadm_ids=ner_hadm_ids,
    )
    labels = build_labels(admissions, patients, data_end=data_end, death_data_end=death_data_end)
    lace_scores = _lace_scores(admissions, diagnoses)
    cutoff_seconds = None if cutoff is None else (cutoff - datetime(1970, 1, 1)).total_seconds()
    config = SplitConfig(
        cutoff_seconds, cutoff_quantile, train_patient_share, patient_disjoint, split_salt, inner_quantile
    )
    split = make_split(labels, config)
    y = _label_matrix(labels)
    mortality = _censored_mortality(labels, split.cutoff)
    for k, target in enumerate(TARGETS):
        rows = int(split.train[:, k].sum())
        positives = int(
            mortality[0][split.train[:, k]].sum()
            if target == "mortality_1y"
            else y[split.train[:, k], k].sum()
        )
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
    if l2 is None:
        strengths, selection = _choose_l2(raw, labels, y, split, max_iter=max_iter)
    else:
        strengths, selection = (
            [float(l2)] * len(TARGETS),
            {t: {"chosen": float(l2), "reason": "fixed"} for t in TARGETS},
        )

    any_train = split.train.any(axis=1)
    normalise = _Normaliser.fit(raw, any_train)
    z = normalise(raw)
    ner_rows = int((raw[any_train, feature_names.index("ner_missing")] == 0).sum())
    weight = np.zeros((len(TARGETS), len(feature_names)))
    bias = np.zeros(len(TARGETS))
    for k in range(len(TARGETS)):
        weight[k], bias[k] = _fit_target(
            k, z, y, mortality, split.train[:, k], l2=strengths[k], max_iter=max_iter
        )
    if ner_rows == 0:  # never observed in training: exactly no influence, whatever NER outputs later
        for name in NER_FEATURES:
            weight[:, feature_names.index(name)] = 0.0

    scores = z @ weight.T + bias
    platt = [
        _fit_platt(scores[split.calibration[:, k], k], y[split.calibration[:, k], k])
        for k in range(len(TARGETS))
    ]
    a = np.array([p[0] for p in platt])
    c = np.array([p[1] for p in platt])
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
            "inner_validation_cutoff": _iso(split.inner_cutoff),
        },
        "rows": {
            part: {t: int(getattr(split, part)[:, k].sum()) for k, t in enumerate(TARGETS)}
            for part in ("train", "calibration", "test")
        },
        "targets_explained": {
            "readmit_30d": "logistic regression on 30-day windows closed before the cutoff; Platt-calibrated",
            "mortality_1y": "exponential (constant hazard) regression on follow-up censored at the cutoff; "
            "its log hazard Platt-calibrated to the 1-year death probability",
        },
        "platt": {t: list(p) for t, p in zip(TARGETS, platt, strict=True)},
        "lace_platt": list(lace_platt),
        "hyperparameters": {
            "l2": dict(zip(TARGETS, strengths, strict=True)),
            "l2_grid": list(L2_GRID),
            "selection": selection,
            "max_iter": max_iter,
            "seed": seed,
        },
        "ner_features_trained": ner_rows > 0,
        "ner_training_rows": ner_rows,
    }
    if ner_rows == 0:
        metadata["notes"] = [
            "No training admission had NER output (history is bulk-loaded without NER), so the NER "
            "features (" + ", ".join(NER_FEATURES) + ") have weight 0: scores are the same with or "
            "without note entities."
        ]
    if model_version is not None:
        metadata["model_version"] = model_version
    model = RiskModel(
        torch.as_tensor(calibrated_weight, dtype=torch.float32),
        torch.as_tensor(calibrated_bias, dtype=torch.float32),
        feature_names,
        normalise.means,
        normalise.stds,
        normalise.medians,
        metadata,
    )
    metrics = _evaluate_rows(model, features, labels, lace_scores, split.test, out_dir)
    metrics["split"] = {"cutoff": _iso(split.cutoff), **metadata["rows"]}
    metrics["hyperparameters"] = {"l2": metadata["hyperparameters"]["l2"]}
    model.metadata["metrics"] = {
        k: v for k, v in metrics.items() if k in (*TARGETS, "lace_readmit_30d", "readmit_30d_vs_lace")
    }
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
    ner_hadm_ids: pa.Array | pa.ChunkedArray | np.ndarray | None = None,
    out_dir: Path | None = None,
    subset: str = "test",
    data_end: datetime | None = None,
    death_data_end: datetime | date | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """AUROC, AUPRC, Brier and calibration of a saved model and of LACE, on the same rows.

    ``subset="test"`` rebuilds the training run's test split from the model metadata (same history
    tables as training); ``subset="all"`` uses every eligible admission (e.g. new data after training).
    Also reports ``readmit_30d_vs_lace``: the AUROC difference with its paired bootstrap 95 % interval.
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
        ner_hadm_ids=ner_hadm_ids,
    )
    labels = build_labels(admissions, patients, data_end=data_end, death_data_end=death_data_end)
    lace_scores = _lace_scores(admissions, diagnoses)
    if subset == "test":
        stored = dict(model.metadata.get("split", {}))
        rows = make_split(labels, SplitConfig(**stored)).test
    else:
        rows = _eligible(labels)
    result = _evaluate_rows(model, features, labels, lace_scores, rows, out_dir)
    result["model_version"] = model.version
    result["subset"] = subset
    return result
