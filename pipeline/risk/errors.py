"""Error messages of the risk stage, one named constant each, saying what to do."""

from __future__ import annotations

R001 = "R001: risk model folder {path} not found. Train one with `ehr-pipeline train-risk` or set EHR_RISK_MODEL_PATH."
R002 = (
    "R002: refused to load risk model {folder}: the sha256 of model.safetensors + model.json (without its "
    "sha256 field) is {actual}, model.json says {expected}. The weights or the metadata (feature order, "
    "means, stds, medians, ...) were changed or corrupted after training; retrain or restore both files."
)
R003 = (
    "R003: the risk model expects feature {feature!r}, which the input features lack. Score with the "
    "features of pipeline.risk.build_features from the same code version, or retrain the model."
)
# R004, R005 (device errors) are D001, D002 of pipeline/device.py now. Codes are not reused.
R006 = "R006: unknown {index} weights {weights!r}; choose one of {choices}."
R007 = "R007: input table {table} lacks column {column!r} (see schemas/tables/{table}.yaml)."
R008 = (
    "R008: risk band thresholds {thresholds!r} are invalid: give a mapping band -> lower bound on "
    "readmit_30d_prob with one band starting at 0.0, e.g. {{'low': 0.0, 'medium': 0.1, 'high': 0.25}}."
)
R009 = (
    "R009: too little data to train target {target}: {n} training rows, {positives} positive. Generate "
    "more history (more patients or days) or move the cutoff."
)
R010 = "R010: risk model metadata {path} is missing or unreadable ({reason}); retrain the model."
R011 = "R011: risk data file {path} is inconsistent: {reason}."
R012 = "R012: split subset {subset!r} is not one of test, all."
R013 = (
    "R013: risk band thresholds EHR_RISK_BAND_MEDIUM={medium!r} and EHR_RISK_BAND_HIGH={high!r} are "
    "invalid: need 0 < EHR_RISK_BAND_MEDIUM < EHR_RISK_BAND_HIGH <= 1 (lower bounds on readmit_30d_prob), "
    "otherwise a band would be empty."
)
R014 = (
    "R014: refused to load risk model {path}: {problems}. The weights do not fit the metadata; retrain "
    "the model with `ehr-pipeline train-risk`."
)


class RiskError(ValueError):
    """A risk-stage input, model or setting is wrong; the message says what to do."""


class RiskModelIntegrityError(RiskError):
    """The saved model failed its checksum and was refused."""


class MissingFeatureError(RiskError, KeyError):
    """The data lacks a feature the saved model expects; ``feature`` names it."""

    def __init__(self, feature: str) -> None:
        self.feature = feature
        super().__init__(R003.format(feature=feature))

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return R003.format(feature=self.feature)
