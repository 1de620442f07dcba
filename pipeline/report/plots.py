"""The report's plots: matplotlib on the Agg backend (no display, no network), written as PNG files.

Each function takes small aggregated frames (ids and counts, never note text) and returns the PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display is needed, and a worker has none

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

WIDTH, HEIGHT, DPI = 8.0, 3.2, 100
#: Status colours shared with the pages' CSS.
STATUS_COLOURS: Mapping[str, str] = {"ok": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828", "too_few_rows": "#9e9e9e"}


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def _figure(height: float = HEIGHT) -> tuple[plt.Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=(WIDTH, height))
    ax.grid(True, alpha=0.3)
    return fig, ax


def _empty(ax: plt.Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this window", ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def trend(frame: pd.DataFrame, *, title: str, ylabel: str, log_scale: bool = False,
          threshold: float | None = None) -> bytes:
    """Lines over days: ``frame`` indexed by day, one column per series."""
    fig, ax = _figure()
    if frame.empty or frame.isna().all().all():
        _empty(ax, ylabel)
    else:
        for column in frame.columns:
            ax.plot(pd.to_datetime(frame.index), frame[column], marker="o", markersize=3, label=str(column))
        if threshold is not None:
            ax.axhline(threshold, color=STATUS_COLOURS["fail"], linestyle="--", linewidth=1, label="threshold")
        if log_scale:
            ax.set_yscale("symlog", linthresh=1)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        shown = frame.dropna(how="all").index
        span = (max(shown) - min(shown)).days if len(shown) else 0
        ax.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, span // 6)))  # whole days, at most ~7 ticks
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=8)
    return _png(fig)


def rows_against_median(names: Sequence[str], today: Sequence[float], median: Sequence[float], *, title: str) -> bytes:
    """Grouped bars per table: the day's rows and the trailing median (log scale: tables differ by orders)."""
    fig, ax = _figure()
    if not names:
        _empty(ax, "tables")
    else:
        x = np.arange(len(names))
        ax.bar(x - 0.2, today, width=0.4, label="this day", color="#1565c0")
        ax.bar(x + 0.2, np.nan_to_num(np.asarray(median, dtype=float)), width=0.4, label="trailing median",
               color="#90a4ae")
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_yscale("symlog", linthresh=1)
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def histogram(values: np.ndarray, *, title: str, xlabel: str, bins: int = 20) -> bytes:
    """A histogram of probabilities on [0, 1]."""
    fig, ax = _figure()
    if not len(values):
        _empty(ax, "scored admissions")
    else:
        ax.hist(values, bins=np.linspace(0, 1, bins + 1), color="#1565c0", edgecolor="white")
        ax.set_xlim(0, 1)
        ax.set_ylabel("admissions", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    return _png(fig)


def horizontal_bars(names: Sequence[str], values: Sequence[float], *, title: str, xlabel: str,
                    colours: Sequence[str] | None = None) -> bytes:
    """One bar per name (run time per stage, PSI per metric)."""
    fig, ax = _figure(max(2.0, 0.28 * len(names) + 1.0))
    if not names:
        _empty(ax, "values")
    else:
        y = np.arange(len(names))
        ax.barh(y, values, color=list(colours) if colours else "#1565c0")
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    return _png(fig)
