"""Inference: the ``admission_risk`` rows of one partition of admissions, in one tensor pass.

Admissions that ended in death (``deathtime`` set or ``hospital_expire_flag`` = 1) still get their indices
(Charlson, Elixhauser, LACE), but no model score: they cannot be readmitted and their death is known, so
``readmit_30d_prob`` is 0, ``mortality_prob`` is 1, ``risk_band`` is ``deceased`` and ``top_factors`` is
``[]``. The learned targets are about patients discharged alive (see ``pipeline.risk.labels``).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contracts import arrow_schema
from pipeline.risk._arrow import ints
from pipeline.risk.errors import R008, R013, RiskError
from pipeline.risk.features import build_features
from pipeline.risk.indices import LACE_CHARLSON_WEIGHTS, charlson, elixhauser, icd_code_counts, lace
from pipeline.risk.labels import died_in_hospital
from pipeline.risk.model import RiskModel

# Lower bound of each band on readmit_30d_prob (a band holds probabilities from its bound to the next).
DEFAULT_THRESHOLDS: dict[str, float] = {"low": 0.0, "medium": 0.10, "high": 0.25}
DECEASED_BAND = "deceased"
TOP_FACTORS = 5
EXPLAINED_TARGET = "readmit_30d"


def band_thresholds(medium: float, high: float) -> dict[str, float]:
    """The low/medium/high thresholds from the two settings; R013 (naming the settings) unless 0 < m < h <= 1."""
    if not (0.0 < medium < high <= 1.0):
        raise RiskError(R013.format(medium=medium, high=high))
    return {"low": 0.0, "medium": float(medium), "high": float(high)}


def risk_bands(probability: np.ndarray, thresholds: Mapping[str, float] | None = None) -> pa.Array:
    """Band name per probability: the band with the highest lower bound <= p."""
    thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    bounds = sorted(thresholds.items(), key=lambda item: item[1])
    if (
        not bounds
        or bounds[0][1] != 0.0
        or any(not 0.0 <= b <= 1.0 for _, b in bounds)
        or len({b for _, b in bounds}) != len(bounds)
        or DECEASED_BAND in thresholds
    ):
        raise RiskError(R008.format(thresholds=thresholds))
    names = np.array([name for name, _ in bounds], dtype=object)
    position = np.searchsorted(np.array([b for _, b in bounds]), probability, side="right") - 1
    return pa.array(names[np.clip(position, 0, len(names) - 1)], pa.string())


def _json_number(values: np.ndarray) -> pa.Array:
    return pc.fill_null(
        pc.cast(pc.round(pa.array(values, pa.float64(), mask=~np.isfinite(values)), 4), pa.string()), "null"
    )


def top_factors_json(
    feature_names: tuple[str, ...],
    raw: np.ndarray,
    used: np.ndarray,
    contributions: np.ndarray,
    top_k: int = TOP_FACTORS,
    target: str = EXPLAINED_TARGET,
) -> pa.Array:
    """Per row, a JSON list of the features that pushed ``target``'s probability *up* most (vectorised).

    Only positive contributions (logit units, exact for the linear model), largest first, at most
    ``top_k``; ``[]`` when none is positive. Each item: ``target``, ``feature``, ``value`` (the value the
    model used), ``imputed`` (true when the feature was missing and the training median was used) and
    ``contribution`` (rounded to 4 places; an item rounding to 0 is left out).
    """
    n, width = contributions.shape
    k = min(top_k, width)
    if n == 0:
        return pa.array([], pa.string())
    if k == 0:
        return pa.array(["[]"] * n, pa.string())
    rounded = np.round(contributions, 4)
    order = np.argsort(-rounded, axis=1, kind="stable")[:, :k]
    rows = np.arange(n)
    names = np.array(feature_names, dtype=object)
    items = []
    for j in range(k):  # k ≤ 5 columns, each a vectorised string build over all rows
        column = order[:, j]
        contribution = rounded[rows, column]
        shown = contribution > 0
        imputed = np.isnan(raw[rows, column])
        item = pc.binary_join_element_wise(
            f'{{"target": "{target}", "feature": "',
            pa.array(names[column], pa.string()),
            '", "value": ',
            _json_number(used[rows, column]),
            ', "imputed": ',
            pa.array(np.where(imputed, "true", "false"), pa.string()),
            ', "contribution": ',
            _json_number(contribution),
            "}",
            "",
        )
        items.append(pc.if_else(pa.array(shown), item, pa.scalar(None, pa.string())))
    # null items (not positive) are skipped by the join; positives come first in every row's order
    joined = pc.binary_join_element_wise(*items, pa.scalar(", "), null_handling="skip")
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
    ner_hadm_ids: pa.Array | pa.ChunkedArray | np.ndarray | None = None,
    stats: MutableMapping[str, int] | None = None,
) -> pa.Table:
    """``admission_risk`` rows (schemas/tables/admission_risk.yaml, same order) for ``admissions``.

    ``prior_admissions``: the subjects' admission history (may include these admissions; only earlier ones
    are used). ``charlson_weights`` sets the reported ``charlson_index``; LACE's C always uses the
    Charlson 1987 weights it was derived with, and the model's own features use the weights it was
    trained with. ``thresholds``: band → lower bound on readmit_30d_prob. ``ner_hadm_ids``: admissions
    whose notes NER processed (see :func:`build_features`). ``stats``, when given, is updated with counts
    for the run record: diagnoses, malformed / unknown-version / unmapped ICD codes, deceased admissions.
    In-hospital deaths: see the module docstring.
    """
    hadm = admissions.column("hadm_id")
    hadm_ids = hadm.combine_chunks()
    charlson_table = charlson(diagnoses, charlson_weights, hadm_ids=hadm_ids)
    lace_charlson = (
        charlson_table
        if charlson_weights == LACE_CHARLSON_WEIGHTS
        else charlson(diagnoses, LACE_CHARLSON_WEIGHTS, hadm_ids=hadm_ids)
    )
    elix_table = elixhauser(diagnoses, hadm_ids=hadm_ids)
    lace_table = lace(admissions, lace_charlson, prior_admissions)
    features = build_features(
        admissions,
        patients,
        diagnoses,
        labs,
        prescriptions,
        prior_admissions,
        note_entities,
        charlson_weights=model.charlson_weights,
        ner_hadm_ids=ner_hadm_ids,
    )

    raw = model.raw_matrix(features)
    z = model.standardise(raw)
    probability = model.predict_proba(features)
    contributions = model.contributions(z, EXPLAINED_TARGET)
    used = np.where(np.isnan(raw), model.medians, raw)
    deceased = died_in_hospital(admissions)
    readmit = np.where(deceased, 0.0, probability[:, 0])
    mortality = np.where(deceased, 1.0, probability[:, 1])
    band = pc.if_else(pa.array(deceased), DECEASED_BAND, risk_bands(probability[:, 0], thresholds))
    factors = pc.if_else(
        pa.array(deceased), "[]", top_factors_json(model.feature_names, raw, used, contributions, top_k)
    )
    if stats is not None:
        for key, value in icd_code_counts(diagnoses, hadm_ids).items():
            stats[key] = stats.get(key, 0) + value
        stats["deceased"] = stats.get("deceased", 0) + int(deceased.sum())

    n = admissions.num_rows
    columns = {
        "hadm_id": pa.array(ints(hadm), pa.int64()),
        "subject_id": pa.array(ints(admissions.column("subject_id")), pa.int64()),
        "ds": pc.cast(admissions.column("ds"), pa.date32()),
        "charlson_index": charlson_table.column("charlson_index"),
        "elixhauser_vw": elix_table.column("elixhauser_vw"),
        "lace_score": lace_table.column("lace_score"),
        "readmit_30d_prob": pa.array(readmit, pa.float64()),
        "mortality_prob": pa.array(mortality, pa.float64()),
        "risk_band": band,
        "top_factors": factors,
        "model_name": pa.array([model.name] * n, pa.string()),
        "model_version": pa.array([model.version] * n, pa.string()),
        "run_id": pa.array([run_id] * n, pa.string()),
    }
    schema = arrow_schema("admission_risk")
    return pa.Table.from_arrays([pc.cast(columns[f.name], f.type) for f in schema], schema=schema)
