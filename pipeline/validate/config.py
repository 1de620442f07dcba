"""Settings of the validation stage (one pydantic model, passed in by the caller)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from pipeline.config import SCHEMAS_DIR, ValidationSettings

DEFAULT_SUITES_DIR = SCHEMAS_DIR / "expectations"


class ValidationConfig(ValidationSettings):
    """How strict the validation stage is for one run.

    Row rules live in the JSON suites under ``suites_dir``; this model holds the numbers that frame them: the
    thresholds every deployment may set (:class:`pipeline.config.ValidationSettings`, the ``EHR_*`` settings)
    and the windows and folders below, fixed by the rules themselves.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # charttime must fall within [admittime - before, dischtime + after] of its admission.
    note_window_days: tuple[float, float] = (1.0, 7.0)
    # MIMIC deathtime can trail dischtime by a few minutes to hours (charting lag).
    death_after_discharge_hours: float = Field(24.0, ge=0.0)
    suites_dir: Path = DEFAULT_SUITES_DIR
    # The PHI tagger the gate runs besides its rules (``pipeline.nlp.phi.PhiTagger``, loaded by the task): placeholder-
    # blanked texts in, per text (start, end, type, score) out. None: rules only.
    phi_tagger: Callable[[list[Any]], list[list[Any]]] | None = Field(default=None, exclude=True, repr=False)

    @classmethod
    def from_settings(cls, settings: ValidationSettings) -> ValidationConfig:
        """The stage's config with the thresholds of ``settings`` (e.g. the pipeline's Settings)."""
        return cls(**{name: getattr(settings, name) for name in ValidationSettings.model_fields})
