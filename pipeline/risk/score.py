"""Inference: the ``admission_risk`` rows of one partition of admissions, in one tensor pass."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.risk._arrow import ints
from pipeline.risk.errors import R008, RiskError
from pipeline.risk.features import build_features
from pipeline.risk.indices import charlson, elixhauser, lace
from pipeline.risk.model import RiskModel
from pipeline.schemas import arrow_schema

# Lower bound of each band on readmit_30d_prob (a band holds probabilities from its bound to the next).
DEFAULT_THRESHOLDS: dict[str, float] = {"low": 0.0, "medium": 0.10, "high": 0.25}
TOP_FACTORS = 5


def risk_bands(probability: np.ndarray, thresholds: Mapping[str, float] | None = None) -> pa.Array:
    """Band name per probability: the band with the highest lower bound <= p."""
    thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    bounds = sorted(thresholds.items(), key=lambda item: item[1])
    if (
        not bounds
        or bounds[0][1] != 0.0
        or any(not 0.0 <= b <= 1.0 for _, b in bounds)
        or len({b for _, b in bounds}) != len(bounds)
    ):
        raise RiskError(R008.format(thresholds=thresholds))
    names = np.array([name for name, _ in bounds], dtype=object)
    position = np.searchsorted(np.array([b for _, b in bounds]), probability, side="right") - 1
    return pa.array(names[np.clip(position, 0, len(names) - 1)], pa.string())


def top_factors_json(
    feature_names: tuple[str, ...], raw: np.ndarray, contributions: np.ndarray, top_k: int = TOP_FACTORS
) -> pa.Array:
    """JSON list of {feature, value, contribution} per row, largest |contribution| first (vectorised).

    ``value`` is the feature as given (null when missing and imputed); contributions are rounded to 4 places.
    """
    n, width = contributions.shape
    k = min(top_k, width)
    if n == 0:
        return pa.array([], pa.string())
    if k == 0:
        return pa.array(["[]"] * n, pa.string())
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :k]
    rows = np.arange(n)[:, None]
    names = np.array(feature_names, dtype=object)
    items = []
    for j in range(k):  # k ≤ 5 columns, each a vectorised string build over all rows
        column = order[:, j]
        name = pa.array(names[column], pa.string())
        value = raw[rows[:, 0], column]
        value_text = pc.fill_null(
            pc.cast(pc.round(pa.array(value, pa.float64(), mask=np.isnan(value)), 4), pa.string()), "null"
        )
        contribution = pc.cast(
            pc.round(pa.array(contributions[rows[:, 0], column], pa.float64()), 4), pa.string()
        )
        items.append(
            pc.binary_join_element_wise(
                '{"feature": "', name, '", "value": ', value_text, ', "contribution": ', contribution, "}", ""
            )
        )
    joined = pc.binary_join_element_wise(*items, ", ")
    return pc.binary_join_element_wise("[", joined, "]", "")


def score_admissions(
    admissions: pa.Table,
    patients: pa.Table,
    diagnoses: pa.Table,
    labs: pa.Table,
    prescriptions: pa.Table,
    prior_admissions: pa.Table,
    note_entities: pa.Table | None,
    model: RiskModel,
    *,
    thresholds: Mapping[str, float] | None = None,
    run_id: str,
    charlson_weights: str = "charlson1987",
    top_k: int = TOP_FACTORS,
) -> pa.Table:
    """``admission_risk`` rows (schemas/tables/admission_risk.yaml, same order) for ``admissions``.

    ``prior_admissions``: the subjects' admission history (may include these admissions; only earlier ones
    are used). ``charlson_weights`` sets the reported ``charlson_index`` (and LACE's C); the model's own
    features use the weights it was trained with. ``thresholds``: band → lower bound on readmit_30d_prob.
    """
    hadm = admissions.column("hadm_id")
    charlson_table = charlson(diagnoses, charlson_weights, hadm_ids=hadm.combine_chunks())
    elix_table = elixhauser(diagnoses, hadm_ids=hadm.combine_chunks())
    lace_table = lace(admissions, charlson_table, prior_admissions)
    features = build_features(
        admissions,
        patients,
        diagnoses,
        labs,
        prescriptions,
        prior_admissions,
        note_entities,
        charlson_weights=model.charlson_weights,
    )

    raw = model.raw_matrix(features)
    z = model.standardise(raw)
    probability = model.predict_proba(features)
    contributions = model.contributions(z, "readmit_30d")

    n = admissions.num_rows
    columns = {
        "hadm_id": pa.array(ints(hadm), pa.int64()),
        "subject_id": pa.array(ints(admissions.column("subject_id")), pa.int64()),
        "ds": pc.cast(admissions.column("ds"), pa.date32()),
        "charlson_index": charlson_table.column("charlson_index"),
        "elixhauser_vw": elix_table.column("elixhauser_vw"),
        "lace_score": lace_table.column("lace_score"),
        "readmit_30d_prob": pa.array(probability[:, 0], pa.float64()),
        "mortality_prob": pa.array(probability[:, 1], pa.float64()),
        "risk_band": risk_bands(probability[:, 0], thresholds),
        "top_factors": top_factors_json(model.feature_names, raw, contributions, top_k),
        "model_name": pa.array([model.name] * n, pa.string()),
        "model_version": pa.array([model.version] * n, pa.string()),
        "run_id": pa.array([run_id] * n, pa.string()),
    }
    schema = arrow_schema("admission_risk")
    return pa.Table.from_arrays([pc.cast(columns[f.name], f.type) for f in schema], schema=schema)
