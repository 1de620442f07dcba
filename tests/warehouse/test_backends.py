"""DuckDB and PostgreSQL built from one Arrow fixture hold the same rows, table by table and view by view."""

from __future__ import annotations

import math
import re
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.config import SQL_DIR
from pipeline.contracts import arrow_schema
from pipeline.warehouse.base import Warehouse, open_warehouse

from .conftest import DAY1, DAY2, LOADED_TABLES, make_day, make_runs, sort_rows

pytestmark = pytest.mark.postgres

VIEW_NAME = re.compile(r"CREATE\s+OR\s+REPLACE\s+VIEW\s+ehr\.(\w+)", re.IGNORECASE)


def _load(warehouse: Warehouse, version: int) -> None:
    for ds in (DAY1, DAY2):
        warehouse.replace_days({t: make_day(t, ds, rows=7, version=version) for t in LOADED_TABLES}, ds)
        warehouse.record_runs(make_runs(ds, run_id=f"run-{version}"))


def _rows(warehouse: Warehouse, sql: str, schema: pa.Schema | None = None) -> list[dict[str, object]]:
    table = warehouse.query(sql)
    if schema is not None:
        table = table.cast(schema)
    return sort_rows(table).to_pylist()


def _same(left: object, right: object) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-12)
    return left == right


def test_backends_tables_match_row_by_row_after_replacing_a_day_twice(
    pg_warehouse: Warehouse, tmp_path: Path
) -> None:
    with open_warehouse(f"duckdb:///{tmp_path / 'warehouse.duckdb'}") as duck:
        for warehouse in (duck, pg_warehouse):
            _load(warehouse, version=1)
            _load(warehouse, version=2)  # the same days again, new values: replaced, not appended
            warehouse.replace_days({t: make_day(t, DAY2, rows=3, version=3) for t in LOADED_TABLES}, DAY2)
        for table in (*LOADED_TABLES, "pipeline_runs"):
            sql = f"SELECT * FROM ehr.{table}"
            in_duck = _rows(duck, sql, arrow_schema(table))
            in_pg = _rows(pg_warehouse, sql, arrow_schema(table))
            assert len(in_duck) == len(in_pg), table
            assert in_duck == in_pg, f"ehr.{table} differs between DuckDB and PostgreSQL"
        expected = [
            {"table_name": t, "ds": d, "row_count": n}
            for t in sorted(LOADED_TABLES)
            for d, n in ((DAY1, 7), (DAY2, 3))
        ]
        for warehouse in (duck, pg_warehouse):
            assert warehouse.counts_by_day(LOADED_TABLES).to_pylist() == expected
        assert duck.trailing_volumes(date(2026, 1, 5)) == pg_warehouse.trailing_volumes(date(2026, 1, 5))
        for table, column in (("notes", "note_id"), ("admissions", "hadm_id")):
            keys = make_day(table, DAY1, rows=7, version=2).column(column).slice(1, 3)
            assert sort_rows(duck.select_where_in(table, column, keys)).equals(
                sort_rows(pg_warehouse.select_where_in(table, column, keys))
            )
        _compare_views(duck, pg_warehouse)


def _compare_views(duck: Warehouse, pg: Warehouse) -> None:
    """Every analyst view (sql/views/) returns the same rows on both engines (values compared loosely
    for floats, since the engines may round differently)."""
    for path in sorted((SQL_DIR / "views").glob("*.sql")):
        for name in VIEW_NAME.findall(path.read_text(encoding="utf-8")):
            in_duck = duck.query(f"SELECT * FROM ehr.{name}")
            in_pg = pg.query(f"SELECT * FROM ehr.{name}")
            assert in_duck.column_names == in_pg.column_names, name
            left = sort_rows(in_duck).to_pylist()
            right = sort_rows(in_pg.cast(in_duck.schema, safe=False)).to_pylist()
            assert len(left) == len(right), name
            for a, b in zip(left, right, strict=True):
                assert all(_same(a[k], b[k]) for k in a), f"view ehr.{name}: {a} != {b}"
