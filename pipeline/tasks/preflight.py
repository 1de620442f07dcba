"""Checked before extraction starts: the source, and the models and settings the day's later stages will need.

A run without its NER model used to extract and validate the whole day first and fail at NER. These checks
open the source (a missing folder or a required note module it lacks is a source error, named first: it is
what to fix first) and read only small files (no model is loaded, no data read), so a missing or incomplete
model, or risk band thresholds that leave a band empty, fail the run in its first second with what to do.
"""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.tasks.runs import ConfigurationError


def source_lacks_notes(settings: Settings) -> bool:
    """True when the configured source has no note module (a hosp-only install): its runs skip NER, so no NER
    model is needed. A source that cannot be opened raises its :class:`~pipeline.sources.SourceError`."""
    from pipeline.sources import absent_tables
    from pipeline.tasks.nightly import open_checked_source

    return "notes" in absent_tables(open_checked_source(settings))


def problems(settings: Settings, *, ner: bool, risk: bool) -> list[str]:
    """Every reason the stages switched on could not run, one line each (empty: ready)."""
    found: list[str] = []
    lacks_notes = source_lacks_notes(settings)  # first: a source error is named before any model problem
    if ner and not lacks_notes:
        folder = settings.ner_model_dir
        if not (folder / "config.json").is_file():
            found.append(f"no NER model at {folder} (config.json missing): run `ehr-pipeline train-ner`, "
                         "set EHR_NER_MODEL_PATH, or switch NER off (EHR_NER_ENABLED=false / --skip-ner)")
        elif not any(folder.glob("*.safetensors")):
            found.append(f"the NER model at {folder} has no *.safetensors weights (only local safetensors "
                         "checkpoints are loaded)")
    if risk:
        from pipeline.risk.errors import RiskError
        from pipeline.risk.model import risk_model_present
        from pipeline.risk.score import band_thresholds

        if not risk_model_present(settings.risk_model_dir):
            found.append(f"no risk model at {settings.risk_model_dir}: run `ehr-pipeline train-risk`, set "
                         "EHR_RISK_MODEL_PATH, or switch risk off (EHR_RISK_ENABLED=false / --skip-risk)")
        try:
            band_thresholds(settings.risk_band_medium, settings.risk_band_high)
        except RiskError as exc:
            found.append(f"risk bands: {exc}")
    return found


def check_ready(settings: Settings, *, ner: bool | None = None, risk: bool | None = None) -> None:
    """Raise :class:`ConfigurationError` naming every problem; ``ner``/``risk`` default to the settings."""
    ner = settings.ner_enabled if ner is None else ner and settings.ner_enabled
    risk = settings.risk_enabled if risk is None else risk and settings.risk_enabled
    if found := problems(settings, ner=ner, risk=risk):
        raise ConfigurationError("not started, nothing extracted: " + "; ".join(found))
