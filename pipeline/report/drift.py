"""Drift checks: the population stability index (PSI) of a day's values against a trailing reference window.

PSI = Σ (p_day − p_ref) · ln(p_day / p_ref) over the bins: categories for a categorical column, the
reference's deciles for a numeric one (the same edges cut both sides). 0.1 is commonly read as a minor
shift and 0.25 as a major one (``EHR_DRIFT_PSI_THRESHOLD``). Counts get half a row added per bin before
the shares are taken, so a bin empty on one side (an unseen category, or a small day) gives a finite PSI.

On small samples PSI is noisy even without any shift: without drift, PSI · (1/n + 1/m) ^ -1 follows a χ²
distribution with bins − 1 degrees of freedom (n, m the day's and the reference's rows). So a metric drifts
when its PSI exceeds both the threshold and the 99.9th percentile of that noise: a day of 40 admissions
needs a larger shift to count than a day of 4,000. The threshold recorded is the larger of the two.

>>> ref = pa.array(["EW EMER."] * 80 + ["ELECTIVE"] * 20)
>>> round(psi(categorical_shares(ref, pa.array(["EW EMER."] * 80 + ["ELECTIVE"] * 20))), 6)
0.0
>>> round(psi(categorical_shares(ref, pa.array(["EW EMER."] * 40 + ["ELECTIVE"] * 60))), 2)
0.7
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import chi2

from pipeline.contracts import arrow_schema

#: Per-bin pseudo-count added to both sides (a bin empty on one side would make PSI infinite).
PSEUDO_COUNT = 0.5
#: Quantile of the no-drift PSI distribution a drifted metric must exceed (see the module docstring).
NOISE_QUANTILE = 0.999
DECILES = np.linspace(0.1, 0.9, 9)


@dataclass(frozen=True)
class Shares:
    """The two sides binned alike: counts per bin of the reference and of the day."""

    reference: np.ndarray
    current: np.ndarray

    @property
    def bins(self) -> int:
        return len(self.reference)

    @property
    def rows(self) -> tuple[int, int]:
        return int(self.reference.sum()), int(self.current.sum())


def categorical_shares(reference: pa.Array | pa.ChunkedArray, current: pa.Array | pa.ChunkedArray) -> Shares:
    """Counts per category (the union of both sides' categories; nulls are a category of their own)."""
    ref, cur = (pc.fill_null(pc.cast(a, pa.string()), "(null)") for a in (reference, current))
    both = pa.chunked_array([*_chunks(ref), *_chunks(cur)], pa.string())
    categories = pc.unique(both)
    categories = categories.take(pc.sort_indices(categories))  # sorted: the bins come out in a stable order

    def counts(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        index = np.asarray(pc.index_in(values, value_set=categories), dtype=np.int64)
        return np.bincount(index, minlength=len(categories)).astype(float)

    return Shares(counts(ref), counts(cur))


def numeric_shares(reference: pa.Array | pa.ChunkedArray, current: pa.Array | pa.ChunkedArray) -> Shares:
    """Counts per bin cut at the reference's deciles (repeated edges merged, so a discrete score such as
    Charlson gets one bin per value it takes, and one above its largest); nulls are dropped."""
    ref = _floats(reference)
    cur = _floats(current)
    edges = _deciles(ref)
    # right-closed bins: a value equal to an edge falls in the bin below it, as quantiles are defined
    return Shares(np.bincount(np.searchsorted(edges, ref, side="left"), minlength=len(edges) + 1).astype(float),
                  np.bincount(np.searchsorted(edges, cur, side="left"), minlength=len(edges) + 1).astype(float))


def _deciles(values: np.ndarray) -> np.ndarray:
    """The reference's deciles among the values seen (the inverse of its empirical CDF, not interpolated, so a
    discrete score gets no bin between two of its values), repeated ones merged."""
    if not len(values):
        return np.array([])
    ordered = np.sort(values)
    # rounded first: 0.3 * 100 is 30.000000000000004 in floating point, which must not round up to 31
    rank = np.ceil(np.round(DECILES * len(ordered), 6)).astype(np.int64) - 1
    return np.unique(ordered[np.clip(rank, 0, len(ordered) - 1)])


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return values.chunks if isinstance(values, pa.ChunkedArray) else [values]


def _floats(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.drop_null(pc.cast(values, pa.float64())), dtype=float)


def psi(shares: Shares) -> float:
    """Population stability index of the day against the reference (both smoothed by :data:`PSEUDO_COUNT`)."""
    ref = shares.reference + PSEUDO_COUNT
    cur = shares.current + PSEUDO_COUNT
    p, q = cur / cur.sum(), ref / ref.sum()
    return float(np.sum((p - q) * np.log(p / q)))


def noise_threshold(shares: Shares) -> float:
    """The PSI that sampling alone exceeds with probability 1 − :data:`NOISE_QUANTILE` at these sizes."""
    m, n = shares.rows
    if shares.bins < 2 or not m or not n:
        return 0.0
    return float(chi2.ppf(NOISE_QUANTILE, shares.bins - 1) * (1 / n + 1 / m))


def counted_shares(reference: Mapping[str, float], current: Mapping[str, float]) -> Shares:
    """Shares from counts per category already taken (e.g. by a SQL ``GROUP BY``).

    >>> counted_shares({"PROBLEM": 6, "TEST": 4}, {"PROBLEM": 3, "TREATMENT": 1}).current.tolist()
    [3.0, 0.0, 1.0]
    """
    categories = sorted(set(reference) | set(current))
    return Shares(np.array([float(reference.get(c, 0)) for c in categories]),
                  np.array([float(current.get(c, 0)) for c in categories]))


@dataclass(frozen=True)
class Sample:
    """One metric: the day's values and its reference window's, binned alike."""

    metric: str
    shares: Shares


def drift_rows(ds: date, samples: Sequence[Sample], *, reference_start: date, reference_end: date,
               psi_threshold: float, min_rows: int, on_drift: Literal["warn", "fail"], run_id: str) -> pa.Table:
    """One ``drift_metrics`` row per sample: PSI, the threshold in force, and the status.

    Status: ``ok``; ``warn`` or ``fail`` (``on_drift``) when PSI exceeds the threshold; ``too_few_rows``
    when the day or the reference has fewer than ``min_rows`` rows (PSI is still given when both have some).
    """
    rows = []
    for sample in samples:
        binned = sample.shares
        reference_rows, current_rows = binned.rows
        value = psi(binned) if reference_rows and current_rows else None
        threshold = max(psi_threshold, noise_threshold(binned))
        if min(reference_rows, current_rows) < min_rows or value is None:
            status = "too_few_rows"
        else:
            status = on_drift if value > threshold else "ok"
        rows.append({
            "ds": ds, "metric": sample.metric, "reference_start": reference_start, "reference_end": reference_end,
            "reference_rows": reference_rows, "current_rows": current_rows, "bins": binned.bins,
            "value": value, "threshold": threshold, "status": status, "run_id": run_id,
        })
    return pa.Table.from_pylist(rows, schema=arrow_schema("drift_metrics"))
