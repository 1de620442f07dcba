"""Validation stage: canonical input tables of one day in, passed rows, quarantine and results out.

Rules are data (schemas/expectations/<table>.json, Great Expectations 1.x suites); see
:func:`validate_batch`. The stage imports neither the warehouse, nor Airflow, nor other stages.
"""

from pipeline.validate.config import ValidationConfig
from pipeline.validate.engine import QUARANTINE_SCHEMA, RESULTS_SCHEMA, ValidationOutcome, validate_batch
from pipeline.validate.errors import BatchFailure, BatchValidationError, ConservationError

__all__ = [
    "QUARANTINE_SCHEMA",
    "RESULTS_SCHEMA",
    "BatchFailure",
    "BatchValidationError",
    "ConservationError",
    "ValidationConfig",
    "ValidationOutcome",
    "validate_batch",
]
