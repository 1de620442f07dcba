"""Risk-scoring stage: validated indices (Charlson, Elixhauser/van Walraven, LACE) and a learned,
calibrated readmission/mortality model. Table in, table out (Arrow); no warehouse, Airflow or other stages.

Task-level entry points:

* :func:`score_admissions` — one partition of admissions → ``admission_risk`` rows (with a loaded
  :class:`RiskModel`, ``RiskModel.load(path, device)`` once per task).
* :func:`train_risk_model` / :func:`evaluate` — the ``train-risk`` / ``eval-risk`` CLI commands.
"""

from pipeline.risk.errors import MissingFeatureError, RiskError, RiskModelIntegrityError
from pipeline.risk.features import build_features, feature_names
from pipeline.risk.indices import (
    charlson,
    count_malformed_icd,
    elixhauser,
    icd_code_counts,
    lace,
    malformed_icd_count,
)
from pipeline.risk.labels import TARGETS, build_labels
from pipeline.risk.metrics import auprc, auroc, brier, calibration_curve
from pipeline.risk.model import RiskModel, risk_model_present
from pipeline.risk.score import DEFAULT_THRESHOLDS, band_thresholds, risk_bands, score_admissions
from pipeline.risk.train import evaluate, paired_bootstrap_auroc_difference, train_risk_model

__all__ = [
    "DEFAULT_THRESHOLDS",
    "TARGETS",
    "MissingFeatureError",
    "RiskError",
    "RiskModel",
    "RiskModelIntegrityError",
    "auprc",
    "auroc",
    "band_thresholds",
    "brier",
    "build_features",
    "build_labels",
    "calibration_curve",
    "charlson",
    "count_malformed_icd",
    "elixhauser",
    "evaluate",
    "feature_names",
    "icd_code_counts",
    "lace",
    "malformed_icd_count",
    "paired_bootstrap_auroc_difference",
    "risk_bands",
    "risk_model_present",
    "score_admissions",
    "train_risk_model",
]
