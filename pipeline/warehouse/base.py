"""The warehouse interface; DuckDB (embedded default) and PostgreSQL (production) implement it.

Everything goes in and out as Arrow tables. A day is replaced inside one transaction, so readers
never see a half-loaded day and a rerun never duplicates rows.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from urllib.parse import parse_qsl

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contracts import INPUT_TABLES, OUTPUT_TABLES, arrow_schema
from pipeline.warehouse.ddl import schema_scripts

KNOWN_TABLES: frozenset[str] = frozenset(INPUT_TABLES + OUTPUT_TABLES)


class WarehouseError(RuntimeError):
    """The warehouse could not be reached or refused an operation; the message never holds a password."""


class SchemaMismatchError(WarehouseError):
    """A warehouse table's columns differ from its contract; nothing was written."""


class Warehouse(ABC):
    dialect: str

    # lifecycle -----------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def execute_script(self, sql: str) -> None:
        """Run DDL statements (no result)."""

    def ensure_schema(self) -> None:
        """Create schema ``ehr`` (sql/<dialect>/), its tables (from the contracts) and the analyst views
        (sql/views/); see :func:`pipeline.warehouse.ddl.schema_scripts`."""
        for script in schema_scripts(self.dialect):
            self.execute_script(script)

    # writing -------------------------------------------------------------------------------
    @abstractmethod
    def replace_days(
        self, tables: Mapping[str, pa.Table], ds_start: date, ds_end: date | None = None
    ) -> dict[str, int]:
        """For each table: replace its rows with ds in [ds_start, ds_end] by ``table``, atomically.

        One transaction per call (PostgreSQL commits a long range once per month of days; every day
        is still all-or-nothing). Returns rows written per table. Tables are checked against their
        contract first (SchemaMismatchError, nothing written); Rows whose ds is outside the range
        are refused (``rows_outside_days``).
        """

    @abstractmethod
    def record_runs(self, runs: pa.Table) -> None:
        """Record ``pipeline_runs`` rows: per (ds, stage) in ``runs``, every earlier row is replaced.

        A stage run writes all of its rows for a day at once, so a rerun (failed or not) replaces the
        whole earlier picture of that stage and day, never only the table names it happens to repeat.
        """

    @abstractmethod
    def forget_runs(self, ds: date, stage_prefixes: Sequence[str]) -> int:
        """Delete the day's ``pipeline_runs`` rows of every stage starting with one of ``stage_prefixes``
        (``"ner["``: every mapped NER part), so a rerun that does not run them leaves no stale record."""

    # reading -------------------------------------------------------------------------------
    @abstractmethod
    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """Run a read query; parameters use ``?`` placeholders on every dialect."""

    @abstractmethod
    def select_where_in(
        self,
        table: str,
        column: str,
        values: pa.Array | pa.ChunkedArray,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Rows of ``ehr.<table>`` whose ``column`` is in ``values`` (a semi-join, not a giant IN list)."""

    def counts_by_day(self, tables: Sequence[str] = INPUT_TABLES + OUTPUT_TABLES) -> pa.Table:
        parts = [
            f"SELECT '{t}' AS table_name, ds, count(*) AS row_count FROM ehr.{t} GROUP BY ds"
            for t in tables
            if t in KNOWN_TABLES
        ]
        return self.query(" UNION ALL ".join(parts) + " ORDER BY table_name, ds")

    def trailing_volumes(self, ds: date, days: int = 14) -> dict[str, list[int]]:
        """Passed-row counts per input table over the ``days`` days before ``ds`` (volume check)."""
        rows = self.query(
            "SELECT table_name, rows_out FROM ehr.pipeline_runs WHERE stage = 'validate' AND status = 'success' "
            "AND ds < ? AND ds >= ? ORDER BY ds",
            [ds, date.fromordinal(ds.toordinal() - days)],
        ).to_pylist()
        out: dict[str, list[int]] = {}
        for row in rows:
            out.setdefault(row["table_name"], []).append(int(row["rows_out"] or 0))
        return out

    @staticmethod
    def refuse_rows_outside(tables: Mapping[str, pa.Table], ds_start: date, ds_end: date) -> None:
        """Raise before anything is written when a table has rows outside the replaced days."""
        for name, data in tables.items():
            if outside := rows_outside_days(data, ds_start, ds_end):
                raise WarehouseError(
                    f"ehr.{name}: {outside} rows have a ds that is missing or outside {ds_start}..{ds_end}; "
                    "nothing was written"
                )

    def check_contract(self, table: str, data: pa.Table) -> pa.Table:
        """Cast ``data`` to the contract of ``table`` or raise SchemaMismatchError naming the difference."""
        if table not in KNOWN_TABLES:
            raise SchemaMismatchError(f"unknown warehouse table {table!r}")
        schema = arrow_schema(table)
        got, want = set(data.column_names), set(schema.names)
        if got != want:
            raise SchemaMismatchError(
                f"ehr.{table}: columns differ from the contract: missing {sorted(want - got)}, "
                f"unexpected {sorted(got - want)}"
            )
        try:
            return data.select(schema.names).cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaMismatchError(f"ehr.{table}: cannot cast to the contract types: {exc}") from None


def rows_outside_days(data: pa.Table, ds_start: date, ds_end: date) -> int:
    """Rows whose ds is missing or outside [ds_start, ds_end].

    A replace must not write them: the rerun of their own day would not delete them, so they would
    double.

    >>> import datetime as dt
    >>> day = dt.date(2026, 1, 2)
    >>> rows_outside_days(pa.table({"ds": [day, dt.date(2026, 1, 3), None]}), day, day)
    2
    """
    if not data.num_rows:
        return 0
    ds = data.column("ds")
    inside = pc.and_(
        pc.greater_equal(ds, pa.scalar(ds_start, pa.date32())),
        pc.less_equal(ds, pa.scalar(ds_end, pa.date32())),
    )
    return data.num_rows - int(pc.sum(pc.fill_null(inside, False).cast(pa.int64())).as_py() or 0)


def _duckdb_path_and_options(url: str) -> tuple[Path, dict[str, str]]:
    # SQLAlchemy convention: duckdb:///relative/path or duckdb:////absolute/path; a query string sets DuckDB
    # options (duckdb:///w.duckdb?memory_limit=1GB&threads=2)
    path, _, query = url[len("duckdb:///") :].partition("?")
    return Path(path), dict(parse_qsl(query))


def open_warehouse(url: str) -> Warehouse:
    """Open the warehouse named by ``url`` (duckdb:///path or postgresql://...); inside
    :func:`pinned_warehouse` for the same URL (and thread), the warehouse it holds open."""
    pinned = getattr(_PINNED, "by_url", {}).get(url)
    if pinned is not None:
        return _Borrowed(pinned)
    if url.startswith("duckdb:///"):
        from pipeline.warehouse.duckdb import DuckDBWarehouse

        path, options = _duckdb_path_and_options(url)
        return DuckDBWarehouse(path, config=options)
    if url.startswith(("postgresql", "postgres://")):
        from pipeline.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(url)
    raise WarehouseError(
        f"unsupported warehouse URL scheme (expected duckdb:/// or postgresql://): {url.split(':')[0]}"
    )


_PINNED = threading.local()  # .by_url: URL → the warehouse pinned_warehouse holds open in this thread


@contextmanager
def pinned_warehouse(url: str, duckdb_options: Mapping[str, str] | None = None) -> Iterator[None]:
    """Hold one DuckDB warehouse open for the block: every :func:`open_warehouse` of ``url`` in this thread gets
    it, and closing what it got leaves it open. A long run (a backfill) then opens and checkpoints the file once,
    not a few times per chunk, and its DuckDB memory is bounded by ``duckdb_options`` (e.g. ``memory_limit``,
    ``threads``; options in ``url`` win). DuckDB still checkpoints as its WAL grows, within that limit.

    Another process cannot open the file while it is held (DuckDB has one writer per file). A PostgreSQL URL
    (or a block nested in one for the same URL) changes nothing."""
    by_url: dict[str, Warehouse] = _PINNED.__dict__.setdefault("by_url", {})
    if not url.startswith("duckdb:///") or url in by_url:
        yield
        return
    from pipeline.warehouse.duckdb import DuckDBWarehouse

    path, options = _duckdb_path_and_options(url)
    config = {**(duckdb_options or {}), **options}
    try:
        warehouse = DuckDBWarehouse(path, config=config)
    except WarehouseError as exc:  # name the options: they come from a setting the user may not know is applied
        given = "&".join(f"{k}={v}" for k, v in config.items())
        raise WarehouseError(f"{exc} (DuckDB options {given!r}: the URL's query and, for a backfill, "
                             "EHR_BACKFILL_DUCKDB)") from None
    by_url[url] = warehouse
    try:
        yield
    finally:
        del by_url[url]
        warehouse.close()


class _Borrowed(Warehouse):
    """The warehouse :func:`pinned_warehouse` holds, as :func:`open_warehouse` returns it: closing it is a no-op."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._warehouse = warehouse
        self.dialect = warehouse.dialect

    def __getattr__(self, name: str) -> object:  # what a dialect has beyond the interface (DuckDB's path)
        return getattr(self._warehouse, name)

    def close(self) -> None:
        """Left open: the block of :func:`pinned_warehouse` closes it."""

    def execute_script(self, sql: str) -> None:
        self._warehouse.execute_script(sql)

    def replace_days(
        self, tables: Mapping[str, pa.Table], ds_start: date, ds_end: date | None = None
    ) -> dict[str, int]:
        return self._warehouse.replace_days(tables, ds_start, ds_end)

    def record_runs(self, runs: pa.Table) -> None:
        self._warehouse.record_runs(runs)

    def forget_runs(self, ds: date, stage_prefixes: Sequence[str]) -> int:
        return self._warehouse.forget_runs(ds, stage_prefixes)

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        return self._warehouse.query(sql, params)

    def select_where_in(
        self, table: str, column: str, values: pa.Array | pa.ChunkedArray, columns: Sequence[str] | None = None
    ) -> pa.Table:
        return self._warehouse.select_where_in(table, column, values, columns)
