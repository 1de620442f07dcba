"""Settings of the validation stage (one pydantic model, passed in by the caller)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SUITES_DIR = REPO_ROOT / "schemas" / "expectations"


class ValidationConfig(BaseModel):
    """How strict the validation stage is for one run.

    Row rules live in the JSON suites under ``suites_dir``; this model holds the numbers
    that frame them (windows, limits) and the batch-level thresholds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_quarantine_share: float = Field(0.2, ge=0.0, le=1.0)
    # Tiny days (a handful of rows) make shares meaningless: 1 bad row of 3 is 33 %.
    min_rows_for_share: int = Field(20, ge=0)
    volume_factor: float = Field(5.0, gt=1.0)
    volume_min_days: int = Field(3, ge=1)
    on_batch_failure: Literal["fail", "warn"] = "fail"
    # A day with no rows in any table is a quiet day (or an undelivered feed), not a broken one: its
    # volume check warns by default, so such a day succeeds with zero rows.
    empty_day: Literal["warn", "fail"] = "warn"
    note_max_chars: int = Field(200_000, gt=0)
    # charttime must fall within [admittime - before, dischtime + after] of its admission.
    note_window_days: tuple[float, float] = (1.0, 7.0)
    # MIMIC deathtime can trail dischtime by a few minutes to hours (charting lag).
    death_after_discharge_hours: float = Field(24.0, ge=0.0)
    phi_gate: bool = True
    suites_dir: Path = DEFAULT_SUITES_DIR
