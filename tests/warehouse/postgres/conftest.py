"""Helpers shared by the PostgreSQL warehouse tests (the server fixtures are in tests/warehouse/conftest.py)."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from pipeline.warehouse.ddl import WAREHOUSE_TABLES
from pipeline.warehouse.postgres import PostgresWarehouse
from tests.warehouse.conftest import sort_rows

#: The tables whose contracts partition them by day in PostgreSQL.
PARTITIONED = ("labs", "note_entities", "notes")


def count_rows(w: PostgresWarehouse, table: str, ds: date) -> int:
    return w.query(f"SELECT count(*) AS n FROM ehr.{table} WHERE ds = ?", [ds]).column("n")[0].as_py()


def day_rows(w: PostgresWarehouse, table: str, ds: date) -> pa.Table:
    return sort_rows(w.query(f"SELECT * FROM ehr.{table} WHERE ds = ?", [ds]))


def partitions_of(w: PostgresWarehouse, table: str) -> dict[str, int]:
    """Partition name -> oid (a new oid means the partition was rebuilt)."""
    rows = w.query(
        "SELECT c.relname, c.oid::bigint AS oid FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(?) ORDER BY 1",
        [f"ehr.{table}"],
    ).to_pylist()
    return {r["relname"]: r["oid"] for r in rows}


def stray_tables(w: PostgresWarehouse) -> list[str]:
    """Tables of schema ehr that are neither a contract table nor an attached partition."""
    return (
        w.query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'ehr' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND NOT c.relname = ANY(?)",
            [list(WAREHOUSE_TABLES)],
        )
        .column(0)
        .to_pylist()
    )
