"""DuckDB warehouse: the embedded default (one file, no server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline.contracts import arrow_schema
from pipeline.warehouse.base import Warehouse, WarehouseError


class DuckDBWarehouse(Warehouse):
    dialect = "duckdb"

    def __init__(self, path: Path, config: Mapping[str, str] | None = None) -> None:
        """``config``: DuckDB options for the connection (e.g. ``memory_limit``, ``threads``), from the URL."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(path), config=dict(config or {}))
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open DuckDB warehouse {path}: {exc}") from None
        self.ensure_schema()

    def close(self) -> None:
        self._con.close()

    def execute_script(self, sql: str) -> None:
        self._con.execute(sql)

    def replace_days(
        self, tables: Mapping[str, pa.Table], ds_start: date, ds_end: date | None = None
    ) -> dict[str, int]:
        ds_end = ds_end or ds_start
        checked = {name: self.check_contract(name, data) for name, data in tables.items()}
        self.refuse_rows_outside(checked, ds_start, ds_end)
        written: dict[str, int] = {}
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            for name, data in checked.items():
                con.execute(f"DELETE FROM ehr.{name} WHERE ds BETWEEN ? AND ?", [ds_start, ds_end])
                con.register("incoming", data)
                cols = ", ".join(data.column_names)
                con.execute(f"INSERT INTO ehr.{name} ({cols}) SELECT {cols} FROM incoming")
                con.unregister("incoming")
                written[name] = data.num_rows
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return written

    def record_runs(self, runs: pa.Table) -> None:
        runs = self.check_contract("pipeline_runs", runs)
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            con.register("incoming_runs", runs)
            # a stage's rows for a day replace all its earlier rows for that day, whatever their table_name
            # (a failed rerun's single 'all' row must not leave the earlier per-table successes standing)
            con.execute(
                "DELETE FROM ehr.pipeline_runs p USING (SELECT DISTINCT ds, stage FROM incoming_runs) r "
                "WHERE p.ds = r.ds AND p.stage = r.stage"
            )
            cols = ", ".join(runs.column_names)
            con.execute(f"INSERT INTO ehr.pipeline_runs ({cols}) SELECT {cols} FROM incoming_runs")
            con.unregister("incoming_runs")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def forget_runs(self, ds: date, stage_prefixes: Sequence[str]) -> int:
        n = 0
        for prefix in stage_prefixes:
            left = self._con.execute(
                "DELETE FROM ehr.pipeline_runs WHERE ds = ? AND starts_with(stage, ?) RETURNING 1", [ds, prefix]
            ).fetchall()
            n += len(left)
        return n

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        return self._con.sql(sql, params=list(params) or None).to_arrow_table()

    def select_where_in(
        self, table: str, column: str, values: pa.Array | pa.ChunkedArray, columns: Sequence[str] | None = None
    ) -> pa.Table:
        schema = arrow_schema(table)
        cols = list(columns) if columns else schema.names
        keys = pa.table({"key": pa.chunked_array([values]) if isinstance(values, pa.Array) else values})
        self._con.register("wanted_keys", keys)
        try:
            select = ", ".join(f"t.{c}" for c in cols)
            result = self._con.sql(
                f"SELECT {select} FROM ehr.{table} t WHERE t.{column} IN (SELECT key FROM wanted_keys)"
            ).to_arrow_table()
        finally:
            self._con.unregister("wanted_keys")
        return result.cast(pa.schema([schema.field(c) for c in cols]))
