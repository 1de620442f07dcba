"""v_high_risk_admissions on real DuckDB and PostgreSQL warehouses: high band, discharged alive only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.contracts import arrow_schema
from pipeline.warehouse import open_warehouse

DS = date(2026, 1, 2)
DISCH = datetime(2026, 1, 2, 12, 0)
DIED = datetime(2026, 1, 2, 11, 0)
# hadm_id: (risk_band, deathtime, hospital_expire_flag)
CASES = {
    1: ("high", None, 0),  # listed
    2: ("high", DIED, 1),  # died in hospital, scored by an older stage without the deceased band
    3: ("high", None, 1),  # only the flag says so
    4: ("high", DIED, None),  # only the time says so
    5: ("high", None, None),  # neither: alive
    6: ("medium", None, 0),
    7: ("deceased", DIED, 1),
}


def _table(name: str, columns: dict[str, list]) -> pa.Table:
    schema = arrow_schema(name)
    n = len(next(iter(columns.values())))
    return pa.Table.from_arrays(
        [pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type) for f in schema],
        schema=schema,
    )


def _day() -> dict[str, pa.Table]:
    hadm = list(CASES)
    n = len(hadm)
    admissions = _table(
        "admissions",
        {
            "subject_id": [100 + h for h in hadm],
            "hadm_id": hadm,
            "admittime": [datetime(2025, 12, 28, 9, 0)] * n,
            "dischtime": [DIED if CASES[h][1] else DISCH for h in hadm],
            "deathtime": [CASES[h][1] for h in hadm],
            "admission_type": ["EW EMER."] * n,
            "discharge_location": ["DIED" if CASES[h][1] or CASES[h][2] else "HOME" for h in hadm],
            "hospital_expire_flag": [CASES[h][2] for h in hadm],
            "ds": [DS] * n,
        },
    )
    risk = _table(
        "admission_risk",
        {
            "hadm_id": hadm,
            "subject_id": [100 + h for h in hadm],
            "ds": [DS] * n,
            "charlson_index": [2] * n,
            "elixhauser_vw": [5] * n,
            "lace_score": [11] * n,
            "readmit_30d_prob": [0.0 if CASES[h][0] == "deceased" else 0.4 for h in hadm],
            "mortality_prob": [1.0 if CASES[h][0] == "deceased" else 0.2 for h in hadm],
            "risk_band": [CASES[h][0] for h in hadm],
            "top_factors": [
                '[{"target": "readmit_30d", "feature": "age", "value": 80, "imputed": false, '
                '"contribution": 0.3}]'
            ]
            * n,
            "model_name": ["m"] * n,
            "model_version": ["1"] * n,
            "run_id": ["r"] * n,
        },
    )
    return {"admissions": admissions, "admission_risk": risk}


def _listed(url: str) -> list[int]:
    with open_warehouse(url) as wh:
        wh.ensure_schema()
        wh.replace_days(_day(), DS)
        rows = wh.query(
            "SELECT hadm_id, top_factors, lace_score FROM ehr.v_high_risk_admissions ORDER BY hadm_id"
        )
    assert set(rows.column_names) == {"hadm_id", "top_factors", "lace_score"}
    return rows.column("hadm_id").to_pylist()


def test_views_high_risk_excludes_in_hospital_deaths_duckdb(tmp_path: Path) -> None:
    assert _listed(f"duckdb:///{tmp_path / 'warehouse.duckdb'}") == [1, 5]


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """A database of this test's own on the local PostgreSQL server (skipped locally when none is reachable)."""
    from tests.services import scratch_database

    with scratch_database("ehr_risk_view") as url:
        yield url


@pytest.mark.postgres
def test_views_high_risk_excludes_in_hospital_deaths_postgres(pg_database_url: str) -> None:
    assert _listed(pg_database_url) == [1, 5]
