"""Validated clinical indices from published tables: Charlson, Elixhauser (van Walraven) and LACE.

The code lists, weights, hierarchy rules and acute admission types are data files in ``schemas/risk/``
(each with a header citing its source); this module only applies them, vectorised over Arrow tables.

Worked example (one admission with heart failure and metastatic lung cancer, one with no diagnoses):

>>> import pyarrow as pa
>>> diagnoses = pa.table({"hadm_id": [1, 1, 1], "icd_code": ["4280", "1629", "1977"], "icd_version": [9, 9, 9]})
>>> scores = charlson(diagnoses, hadm_ids=[1, 2])
>>> scores.column("charlson_index").to_pylist()     # CHF 1 + metastatic 6 (malignancy 2 not counted)
[7, 0]
>>> scores.column("malignancy").to_pylist(), scores.column("metastatic_tumor").to_pylist()
([False, False], [True, False])
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import SCHEMAS_DIR
from pipeline.risk._arrow import SECONDS_PER_DAY, day_floor, ints, lookup, pairs_by_key, require, seconds
from pipeline.risk.errors import R006, R011, RiskError

log = logging.getLogger(__name__)

RISK_DATA_DIR = SCHEMAS_DIR / "risk"
# LACE's "C" is the Charlson score as LACE was derived and validated with it (van Walraven 2010 used the
# original Charlson 1987 weights); Quan 2011 weights would change C and so the published LACE cut-points.
LACE_CHARLSON_WEIGHTS = "charlson1987"
ED_LOOKBACK_DAYS = 182  # LACE "E": emergency visits in the 6 months before admission
MALFORMED_KEY = b"malformed_icd_codes"

# Diagnosis code shapes without dots. ICD-9-CM: 3-5 digits, V + 2-4 digits, E + 3-4 digits.
# ICD-10(-CM): letter, digit, alphanumeric, then up to 4 more alphanumerics (7 characters at most).
_ICD9_PATTERN = r"^([0-9]{3,5}|V[0-9]{2,4}|E[0-9]{3,4})$"
_ICD10_PATTERN = r"^[A-Z][0-9][0-9A-Z]{1,5}$"


def read_data_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a ``schemas/risk`` CSV; lines starting with '#' are the citation header."""
    with path.open(encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if line.strip() and not line.lstrip().startswith("#")]
    return list(csv.DictReader(lines))


@dataclass(frozen=True)
class ComorbidityMap:
    """Prefix → category lookup for one index (Charlson or Elixhauser), loaded from its data files."""

    index: str
    categories: tuple[str, ...]
    keys: np.ndarray  # unique "<version>:<prefix>" strings, sorted
    key_offsets: np.ndarray  # CSR offsets into key_categories, len(keys) + 1
    key_categories: np.ndarray  # category positions
    prefix_lengths: tuple[int, ...]
    hierarchy: tuple[tuple[int, int], ...]  # (superior, inferior) category positions
    weights: dict[str, np.ndarray]  # weight scheme -> per-category weight


@cache
def comorbidity_map(index: str, data_dir: Path = RISK_DATA_DIR) -> ComorbidityMap:
    prefix_path = data_dir / f"{index}_icd_prefixes.csv"
    rows = read_data_csv(prefix_path)
    categories: list[str] = []
    pairs: dict[str, set[int]] = {}
    for row in rows:
        category = row["category"].strip()
        if category not in categories:
            categories.append(category)
        key = f"{int(row['icd_version'])}:{row['code_prefix'].strip().upper()}"
        pairs.setdefault(key, set()).add(categories.index(category))
    keys = np.array(sorted(pairs), dtype=object)
    counts = np.array([len(pairs[k]) for k in keys], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    key_categories = np.array([c for k in keys for c in sorted(pairs[k])], dtype=np.int64)
    lengths = tuple(sorted({len(k.split(":", 1)[1]) for k in keys}))

    hierarchy = []
    for row in read_data_csv(data_dir / "comorbidity_hierarchy.csv"):
        if row["index"].strip() != index:
            continue
        superior, inferior = row["superior"].strip(), row["inferior"].strip()
        for name in (superior, inferior):
            if name not in categories:
                raise RiskError(
                    R011.format(
                        path=data_dir / "comorbidity_hierarchy.csv",
                        reason=f"unknown {index} category {name!r}",
                    )
                )
        hierarchy.append((categories.index(superior), categories.index(inferior)))

    weight_path = data_dir / f"{index}_weights.csv"
    weight_rows = {r["category"].strip(): r for r in read_data_csv(weight_path)}
    if set(weight_rows) != set(categories):
        raise RiskError(R011.format(path=weight_path, reason="categories differ from the prefix file"))
    schemes = [c for c in next(iter(weight_rows.values())) if c != "category"]
    weights = {s: np.array([float(weight_rows[c][s]) for c in categories]) for s in schemes}
    return ComorbidityMap(
        index, tuple(categories), keys, offsets, key_categories, lengths, tuple(hierarchy), weights
    )


def normalise_icd(diagnoses: pa.Table) -> tuple[pa.ChunkedArray, np.ndarray, np.ndarray]:
    """Trimmed upper-case codes, their versions, and a mask of well-formed (code, version) pairs."""
    require(diagnoses, "diagnoses", ("hadm_id", "icd_code", "icd_version"))
    codes = pc.utf8_upper(pc.utf8_trim_whitespace(pc.cast(diagnoses.column("icd_code"), pa.string())))
    versions = ints(diagnoses.column("icd_version"), fill=0)
    is9 = np.asarray(pc.fill_null(pc.match_substring_regex(codes, _ICD9_PATTERN), False))
    is10 = np.asarray(pc.fill_null(pc.match_substring_regex(codes, _ICD10_PATTERN), False))
    valid = ((versions == 9) & is9) | ((versions == 10) & is10)
    valid &= np.asarray(pc.is_valid(diagnoses.column("hadm_id")))
    return codes, versions, valid


def count_malformed_icd(diagnoses: pa.Table) -> int:
    """Diagnoses whose code is empty, has punctuation or does not fit its icd_version's pattern."""
    _, _, valid = normalise_icd(diagnoses)
    return int((~valid).sum())


def _prefix_hits(
    codes: pa.ChunkedArray, versions: np.ndarray, candidate: np.ndarray, cmap: ComorbidityMap
) -> tuple[np.ndarray, np.ndarray]:
    """(diagnosis row, category position) for every prefix match among the ``candidate`` rows."""
    code_len = np.asarray(pc.utf8_length(codes).to_numpy(zero_copy_only=False))
    version_text = pc.cast(pa.array(versions), pa.string())
    hit_rows, hit_cats = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for length in cmap.prefix_lengths:  # a handful of prefix lengths (3-5), not rows
        long_enough = candidate & (code_len >= length)
        if not long_enough.any():
            continue
        prefix = pc.utf8_slice_codeunits(codes, 0, length)
        key = pc.binary_join_element_wise(version_text, prefix, ":")
        key_idx = lookup(np.asarray(key.to_numpy(zero_copy_only=False), dtype=object), cmap.keys)
        hit = np.flatnonzero(long_enough & (key_idx >= 0))
        if len(hit) == 0:
            continue
        starts, stops = cmap.key_offsets[key_idx[hit]], cmap.key_offsets[key_idx[hit] + 1]
        counts = stops - starts
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        hit_rows.append(np.repeat(hit, counts))
        hit_cats.append(cmap.key_categories[np.repeat(starts, counts) + within])
    return np.concatenate(hit_rows), np.concatenate(hit_cats)


def icd_code_counts(
    diagnoses: pa.Table, hadm_ids: Sequence[int] | np.ndarray | pa.Array | None = None
) -> dict[str, int]:
    """Counts of the diagnoses of ``hadm_ids`` (all when None) for the run record.

    ``unknown_icd_version``: icd_version not 9 or 10; ``malformed_icd_codes``: a code that is empty or
    does not fit its version's pattern; ``unmapped_icd_codes``: well-formed codes in no Charlson or
    Elixhauser category (most are ordinary codes; a jump suggests a coding-system problem). The first two
    are ignored by the indices, never a crash.
    """
    codes, versions, valid = normalise_icd(diagnoses)
    rows = np.ones(diagnoses.num_rows, dtype=bool)
    if hadm_ids is not None:
        wanted = np.asarray(
            hadm_ids.to_numpy(zero_copy_only=False) if isinstance(hadm_ids, pa.Array) else hadm_ids,
            dtype=np.int64,
        )
        rows = lookup(ints(diagnoses.column("hadm_id")), np.unique(wanted)) >= 0
    mapped = np.zeros(diagnoses.num_rows, dtype=bool)
    for index in ("charlson", "elixhauser"):
        hit, _ = _prefix_hits(codes, versions, valid & rows, comorbidity_map(index))
        mapped[hit] = True
    known_version = (versions == 9) | (versions == 10)
    return {
        "diagnoses": int(rows.sum()),
        "unknown_icd_version": int((rows & ~known_version).sum()),
        "malformed_icd_codes": int((rows & known_version & ~valid).sum()),
        "unmapped_icd_codes": int((rows & valid & ~mapped).sum()),
    }


def comorbidity_flags(
    diagnoses: pa.Table, index: str, hadm_ids: Sequence[int] | np.ndarray | pa.Array | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """(hadm_ids, bool flags [admission, category] after hierarchy rules, malformed code count)."""
    cmap = comorbidity_map(index)
    codes, versions, valid = normalise_icd(diagnoses)
    diag_hadm = ints(diagnoses.column("hadm_id"))
    if hadm_ids is None:
        out_hadm = np.unique(diag_hadm[valid])
    else:
        out_hadm = np.asarray(
            hadm_ids.to_numpy(zero_copy_only=False) if isinstance(hadm_ids, pa.Array) else hadm_ids,
            dtype=np.int64,
        )
    flags = np.zeros((len(out_hadm), len(cmap.categories)), dtype=bool)
    row_of = lookup(diag_hadm, out_hadm)
    keep = valid & (row_of >= 0)
    hit, cats = _prefix_hits(codes, versions, keep, cmap)
    flags[row_of[hit], cats] = True
    for superior, inferior in cmap.hierarchy:
        flags[:, inferior] &= ~flags[:, superior]
    malformed = int((~valid).sum())
    if malformed:
        log.warning("%s: ignored %d malformed ICD codes of %d diagnoses", index, malformed, len(valid))
    return out_hadm, flags, malformed


def _index_table(
    index: str,
    score_name: str,
    weights: str,
    diagnoses: pa.Table,
    hadm_ids: Sequence[int] | np.ndarray | pa.Array | None,
) -> pa.Table:
    cmap = comorbidity_map(index)
    if weights not in cmap.weights:
        raise RiskError(R006.format(index=index, weights=weights, choices=", ".join(cmap.weights)))
    out_hadm, flags, malformed = comorbidity_flags(diagnoses, index, hadm_ids)
    score = np.rint(flags.astype(np.float64) @ cmap.weights[weights]).astype(np.int32)
    columns = {"hadm_id": pa.array(out_hadm, pa.int64()), score_name: pa.array(score, pa.int32())}
    for position, category in enumerate(cmap.categories):
        columns[category] = pa.array(flags[:, position], pa.bool_())
    table = pa.table(columns)
    return table.replace_schema_metadata(
        {MALFORMED_KEY: str(malformed).encode(), b"weights": weights.encode()}
    )


def charlson(
    diagnoses: pa.Table,
    weights: str = "charlson1987",
    *,
    hadm_ids: Sequence[int] | np.ndarray | pa.Array | None = None,
) -> pa.Table:
    """Charlson comorbidity index per admission (Quan 2005 ICD-9-CM/ICD-10 coding algorithms).

    Returns ``hadm_id, charlson_index`` (int32) and one bool column per category, hierarchy applied.
    ``weights``: ``charlson1987`` (original) or ``quan2011`` (updated). With ``hadm_ids`` the rows are
    exactly those admissions in that order (admissions without diagnoses score 0); otherwise the admissions
    found in ``diagnoses``. Malformed codes are ignored; their count is in the schema metadata
    (``malformed_icd_codes``) and the log.
    """
    return _index_table("charlson", "charlson_index", weights, diagnoses, hadm_ids)


def elixhauser(
    diagnoses: pa.Table,
    weights: str = "van_walraven2009",
    *,
    hadm_ids: Sequence[int] | np.ndarray | pa.Array | None = None,
) -> pa.Table:
    """Elixhauser comorbidities (Quan 2005) and the van Walraven 2009 score per admission.

    Returns ``hadm_id, elixhauser_vw`` (int32, may be negative) and one bool column per category.
    Same conventions as :func:`charlson`.
    """
    return _index_table("elixhauser", "elixhauser_vw", weights, diagnoses, hadm_ids)


def malformed_icd_count(index_table: pa.Table) -> int:
    """The malformed-code count recorded by :func:`charlson` or :func:`elixhauser`."""
    metadata = index_table.schema.metadata or {}
    return int(metadata.get(MALFORMED_KEY, b"0"))


@cache
def _emergent_types(data_dir: Path = RISK_DATA_DIR) -> frozenset[str]:
    rows = read_data_csv(data_dir / "emergent_admission_types.csv")
    return frozenset(r["admission_type"].strip().upper() for r in rows)


def emergent_admission(admission_type: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """True where the admission type is acute (schemas/risk/emergent_admission_types.csv)."""
    normalised = pc.utf8_upper(pc.utf8_trim_whitespace(pc.cast(admission_type, pa.string())))
    value_set = pa.array(sorted(_emergent_types()), pa.string())
    return np.asarray(pc.fill_null(pc.is_in(normalised, value_set=value_set), False))


def count_prior_events(
    index_subject: np.ndarray,
    index_hadm: np.ndarray,
    index_time: np.ndarray,
    prior_subject: np.ndarray,
    prior_hadm: np.ndarray,
    prior_event_time: np.ndarray,
    window_days: float,
    *,
    prior_admit: np.ndarray | None = None,
) -> np.ndarray:
    """Per index admission: other admissions of the subject whose event time is in [t - window, t).

    With ``prior_admit``, the other admission must also have started before t (an ED registration of a
    stay that began later is not history).
    """
    left, right = pairs_by_key(index_subject, prior_subject)
    event = prior_event_time[right]
    t = index_time[left]
    inside = (
        (prior_hadm[right] != index_hadm[left]) & (event < t) & (event >= t - window_days * SECONDS_PER_DAY)
    )
    if prior_admit is not None:
        inside &= prior_admit[right] < t
    return np.bincount(left[inside], minlength=len(index_subject)).astype(np.int64)


def length_of_stay_days(admittime: np.ndarray, dischtime: np.ndarray) -> np.ndarray:
    """Calendar days between admission and discharge dates (midnights crossed; same-day stays are 0)."""
    return np.maximum(day_floor(dischtime) - day_floor(admittime), 0)


def _lace_points(
    los_days: np.ndarray, acute: np.ndarray, charlson_index: np.ndarray, ed_visits: np.ndarray
) -> tuple[np.ndarray, ...]:
    # L: <1 day 0, 1-3 days 1-3, 4-6 days 4, 7-13 days 5, >=14 days 7 (van Walraven 2010, Table 2)
    l_points = np.array([0, 1, 2, 3, 4, 5, 7])[np.searchsorted([1, 2, 3, 4, 7, 14], los_days, side="right")]
    a_points = np.where(acute, 3, 0)
    # C: Charlson 0-3 score their value, but >=4 gives 5 points, not 4
    c_points = np.where(charlson_index >= 4, 5, np.clip(charlson_index, 0, 3))
    e_points = np.clip(ed_visits, 0, 4)
    return l_points, a_points, c_points, e_points


def lace(
    admissions: pa.Table,
    charlson_index: pa.Table | Sequence[int] | np.ndarray,
    prior_admissions: pa.Table,
) -> pa.Table:
    """LACE index (van Walraven 2010) per admission, in the order of ``admissions``.

    ``charlson_index``: the table of :func:`charlson` with Charlson 1987 weights (joined on hadm_id,
    absent → 0; other weights are refused, LACE is defined on the 1987 score) or values aligned with
    ``admissions``. ``prior_admissions``: any admissions of the same subjects (may include the index
    admissions and later ones); ED visits are their ``edregtime`` in the 182 days before this admittime.
    Only ED visits that led to an admission are in the admissions table, so E may undercount.
    Returns hadm_id, lace_score (int32), length_of_stay_days, ed_visits_6m and the four point columns.
    """
    require(admissions, "admissions", ("subject_id", "hadm_id", "admittime", "dischtime", "admission_type"))
    require(prior_admissions, "admissions", ("subject_id", "hadm_id", "edregtime"))
    hadm = ints(admissions.column("hadm_id"))
    admit, disch = seconds(admissions.column("admittime")), seconds(admissions.column("dischtime"))
    if isinstance(charlson_index, pa.Table):
        weights = (
            (charlson_index.schema.metadata or {}).get(b"weights", LACE_CHARLSON_WEIGHTS.encode()).decode()
        )
        if weights != LACE_CHARLSON_WEIGHTS:
            raise RiskError(
                R006.format(index="LACE Charlson", weights=weights, choices=LACE_CHARLSON_WEIGHTS)
            )
        position = lookup(hadm, ints(charlson_index.column("hadm_id")))
        values = ints(charlson_index.column("charlson_index"), fill=0)
        cci = np.where(position >= 0, values[np.maximum(position, 0)], 0)
    else:
        cci = np.asarray(charlson_index, dtype=np.int64)
    ed_visits = count_prior_events(
        ints(admissions.column("subject_id")),
        hadm,
        admit,
        ints(prior_admissions.column("subject_id")),
        ints(prior_admissions.column("hadm_id")),
        seconds(prior_admissions.column("edregtime")),
        ED_LOOKBACK_DAYS,
        prior_admit=seconds(prior_admissions.column("admittime"))
        if "admittime" in prior_admissions.column_names
        else None,
    )
    los = length_of_stay_days(admit, disch)
    acute = emergent_admission(admissions.column("admission_type"))
    l_pts, a_pts, c_pts, e_pts = _lace_points(los, acute, cci, ed_visits)
    score = l_pts + a_pts + c_pts + e_pts
    return pa.table(
        {
            "hadm_id": pa.array(hadm, pa.int64()),
            "lace_score": pa.array(score, pa.int32()),
            "length_of_stay_days": pa.array(los, pa.float64()),
            "ed_visits_6m": pa.array(ed_visits, pa.int64()),
            "l_points": pa.array(l_pts, pa.int32()),
            "a_points": pa.array(a_pts, pa.int32()),
            "c_points": pa.array(c_pts, pa.int32()),
            "e_points": pa.array(e_pts, pa.int32()),
        }
    )
