"""Warehouse test fixtures: one Arrow day per table built from the contracts, and a PostgreSQL
database of its own for this test run (``ehr_test_<pid>``, dropped at the end).

The server defaults to postgresql://postgres@127.0.0.1:5432/postgres; set EHR_TEST_PG_URL to use
another. PostgreSQL tests are skipped, with the reason, when the server cannot be reached, except
when EHR_REQUIRE_SERVICES=1 (set by .ci/run): then they fail, so CI cannot pass without running them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta

import pyarrow as pa
import pytest

from pipeline.contracts import INPUT_TABLES, OUTPUT_TABLES, contract
from tests.services import (  # noqa: F401  (re-exported for the warehouse tests)
    PG_SERVER_URL,
    require_marker,
    require_pg_server,
    scratch_database,
    skip_or_fail,
    with_database,
)

DAY1 = date(2026, 1, 1)
DAY2 = date(2026, 1, 2)
LOADED_TABLES: tuple[str, ...] = tuple(t for t in INPUT_TABLES + OUTPUT_TABLES if t != "pipeline_runs")


def make_day(table: str, ds: date, rows: int = 5, version: int = 1) -> pa.Table:
    """``rows`` deterministic rows of ``table`` for day ``ds``, valid for its contract and keys.

    Keys are unique across days (the day's ordinal is part of every number); ``version`` changes the
    non-key values, so a reloaded day can be told from the first load.
    """
    base = (ds.toordinal() % 10_000) * 1_000
    keys = set(contract(table).primary_key)
    schema = contract(table).arrow_schema
    arrays = []
    for field in schema:
        ids = [base + i for i in range(rows)]
        bump = 0 if field.name in keys else version - 1
        if field.name == "ds":
            values: list[object] = [ds] * rows
        elif pa.types.is_integer(field.type):
            values = [i + bump for i in ids]
        elif pa.types.is_floating(field.type):
            values = [i / 7 + bump for i in ids]
        elif pa.types.is_boolean(field.type):
            values = [(i + bump) % 2 == 0 for i in ids]
        elif pa.types.is_date(field.type):
            values = [ds - timedelta(days=(i + bump) % 30) for i in ids]
        elif pa.types.is_timestamp(field.type):
            values = [datetime(ds.year, ds.month, ds.day, (i + bump) % 24, i % 60, 7) for i in ids]
        else:
            values = [f"{field.name}-{i}-v{1 + bump}" for i in ids]
        if field.nullable and field.name not in keys and rows > 1:
            values[-1] = None  # every nullable column carries a null
        arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def make_runs(ds: date, status: str = "success", run_id: str = "run-1") -> pa.Table:
    rows = [
        {
            "run_id": run_id,
            "ds": ds,
            "stage": stage,
            "table_name": table,
            "status": status,
            "started_at": datetime(2026, 2, 1, 3, 0, 0),
            "finished_at": datetime(2026, 2, 1, 3, 5, 0),
            "rows_in": 10,
            "rows_out": 9,
            "rows_quarantined": 1,
            "detail": None,
        }
        for stage in ("extract", "validate")
        for table in ("patients", "admissions")
    ]
    return pa.Table.from_pylist(rows, schema=contract("pipeline_runs").arrow_schema)


def sort_rows(table: pa.Table) -> pa.Table:
    """Rows in a canonical order (every column ascending), for row-by-row comparisons."""
    return table.sort_by([(name, "ascending") for name in table.column_names])


# PostgreSQL ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def _pg_run_database() -> Iterator[str]:
    require_pg_server()
    with scratch_database("ehr_test") as url:
        yield url


@pytest.fixture
def pg_url(_pg_run_database: str) -> str:
    """URL of a fresh database for this test run (created once, dropped with its connections at the end).

    Checked for each test that asks for it: a test reaching the server must be marked ``postgres``, also
    when an earlier test already created the database."""
    require_marker("postgres", "the PostgreSQL server")
    return _pg_run_database


@pytest.fixture
def pg_warehouse(pg_url: str) -> Iterator[object]:
    """An open PostgresWarehouse on empty ``ehr`` tables."""
    from pipeline.warehouse.postgres import PostgresWarehouse

    warehouse = PostgresWarehouse(pg_url)
    reset_tables(warehouse)
    try:
        yield warehouse
    finally:
        warehouse.close()


def reset_tables(warehouse: object) -> None:
    """Empty every ehr table and drop the day partitions (and any table a test left in schema ehr)."""
    tables = ", ".join(f"ehr.{t}" for t in INPUT_TABLES + OUTPUT_TABLES)
    warehouse.execute_script(  # type: ignore[attr-defined]
        f"""TRUNCATE {tables};
        DO $$DECLARE t text;
        BEGIN
            FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'ehr' AND c.relkind = 'r'
                       AND c.relname <> ALL (ARRAY['{"', '".join(INPUT_TABLES + OUTPUT_TABLES)}'])
            LOOP EXECUTE format('DROP TABLE ehr.%I', t); END LOOP;
        END$$;"""
    )
