"""Discrimination and calibration metrics (numpy only) and calibration plots (matplotlib, Agg).

>>> round(auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 3)
0.75
>>> round(brier([0, 1], [0.0, 0.5]), 3)
0.125
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _arrays(
    y_true: Sequence[float] | np.ndarray, score: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, ...]:
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(s)
    return y[keep], s[keep]


def auroc(y_true: Sequence[float] | np.ndarray, score: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None when one class is absent."""
    y, s = _arrays(y_true, score)
    positives = int((y == 1).sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid_rank = (ends - (counts - 1) / 2.0)[inverse]  # average 1-based rank of tied scores
    return float((mid_rank[y == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def auprc(y_true: Sequence[float] | np.ndarray, score: Sequence[float] | np.ndarray) -> float | None:
    """Average precision: sum over distinct thresholds of (recall step) × precision; None without positives."""
    y, s = _arrays(y_true, score)
    positives = (y == 1).sum()
    if positives == 0:
        return None
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_tie]
    predicted = (np.arange(len(y)) + 1)[last_of_tie]
    recall = tp / positives
    precision = tp / predicted
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier(y_true: Sequence[float] | np.ndarray, probability: Sequence[float] | np.ndarray) -> float | None:
    y, p = _arrays(y_true, probability)
    return float(np.mean((p - y) ** 2)) if len(y) else None


def calibration_curve(
    y_true: Sequence[float] | np.ndarray, probability: Sequence[float] | np.ndarray, bins: int = 10
) -> dict[str, list[float]]:
    """Mean predicted vs observed rate in equal-count bins of the predicted probability."""
    y, p = _arrays(y_true, probability)
    if len(y) == 0:
        return {"predicted": [], "observed": [], "count": []}
    order = np.argsort(p, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(y))) if len(g)]
    return {
        "predicted": [float(p[g].mean()) for g in groups],
        "observed": [float(y[g].mean()) for g in groups],
        "count": [float(len(g)) for g in groups],
    }


def summary(
    y_true: Sequence[float] | np.ndarray, probability: Sequence[float] | np.ndarray
) -> dict[str, float | None]:
    y, p = _arrays(y_true, probability)
    return {
        "auroc": auroc(y, p),
        "auprc": auprc(y, p),
        "brier": brier(y, p),
        "n": float(len(y)),
        "positives": float((y == 1).sum()),
    }


def plot_calibration(path: Path, curves: dict[str, dict[str, list[float]]], title: str) -> Path:
    """Reliability diagram of one or more named curves, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    for name, curve in curves.items():
        axes.plot(curve["predicted"], curve["observed"], marker="o", label=name)
    axes.set_xlabel("predicted probability")
    axes.set_ylabel("observed rate")
    axes.set_title(title)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
