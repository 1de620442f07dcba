"""``PostgresWarehouse``: the production backend of the Warehouse interface.

Bulk loads go through ADBC (``adbc_driver_postgresql``), which streams Arrow record batches with
binary ``COPY``: no per-row Python, no pandas. A day is replaced inside ONE transaction: the large
tables get a new day partition built aside and swapped in (:mod:`.partitions`), the small ones a
DELETE of the ds range and a COPY. Concurrent loads of the same table wait for each other on a
transaction-level advisory lock, so readers are never blocked while rows are copied; only the final
swap takes the parent's ACCESS EXCLUSIVE lock, under ``lock_timeout`` and retried. A load that fails or
is killed rolls back entirely: the previous version of the day stays, and no half-built table is left.
Reads come back as Arrow tables. Driver messages are scrubbed (:mod:`.connection`) before they are
raised or logged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc_pg
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contracts import arrow_schema, contract
from pipeline.warehouse.base import SchemaMismatchError, Warehouse, WarehouseError
from pipeline.warehouse.postgres.connection import (
    DEFAULT_CONNECT_TIMEOUT_S,
    ConnectionTarget,
    libpq_uri,
    redact,
    translate_placeholders,
)
from pipeline.warehouse.postgres.partitions import (
    LOAD_PHASES,
    Clock,
    Swap,
    copy_into,
    day_groups,
    rows_between,
    stage_days,
    swap_partitions,
)
from pipeline.warehouse.postgres.schema import (
    SCHEMA_LOCK_KEY,
    LiveTable,
    ddl_fingerprint,
    live_table,
    migrate_tables,
    partitioned_ddl,
    relkind,
)

log = logging.getLogger(__name__)

# First key of the two-key advisory lock a load holds per table (second key: hashtext of the name).
_LOAD_LOCK_CLASS = 0x45_48_52  # "EHR"
#: Memory for building a new partition's primary key and indexes (SET LOCAL, this load only).
LOAD_MAINTENANCE_WORK_MEM = "256MB"
#: Days replaced per transaction in a range load. Each day of a partitioned table costs a handful of
#: lock-table slots (table, TOAST, indexes, old partition), and PostgreSQL's shared lock table is
#: max_locks_per_transaction x max_connections (6,400 by default); a month per transaction stays
#: well inside it. Each day is still replaced atomically; see replace_days.
MAX_DAYS_PER_TRANSACTION = 31


def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


class PostgresWarehouse(Warehouse):
    dialect = "postgres"

    def __init__(self, url: str, *, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self.target = ConnectionTarget(url)
        self._secrets: list[str | None] = list(self.target.secrets)
        try:
            # autocommit off: every write below is one explicit transaction
            self._con = adbc_pg.connect(libpq_uri(url, connect_timeout=connect_timeout))
        except adbc_driver_manager.Error as exc:
            raise WarehouseError(
                f"cannot connect to the PostgreSQL warehouse at {self.target}: {self._clean(exc)}"
            ) from None
        self._checked_tables: dict[str, LiveTable] = {}
        self.last_load_timings: dict[str, float] = {}
        self.ensure_schema()

    # lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        with contextlib.suppress(adbc_driver_manager.Error):
            self._con.close()

    def _clean(self, exc: BaseException) -> str:
        return redact(str(exc), self._secrets)

    def _fail(self, what: str, exc: BaseException) -> WarehouseError:
        return WarehouseError(f"{what} ({self.target}): {self._clean(exc)}")

    def execute_script(self, sql: str) -> None:
        """Run DDL (several statements allowed) and commit."""
        try:
            with self._con.cursor() as cur:
                cur.executescript(sql)
            self._con.commit()
        except adbc_driver_manager.Error as exc:
            self._con.rollback()
            raise self._fail("DDL failed", exc) from None

    def ensure_schema(self) -> None:
        """Create or update the schema; skipped when the DDL it last applied is unchanged.

        Re-running ``CREATE INDEX IF NOT EXISTS`` takes a SHARE lock on each table, which would make
        every task that merely opens the warehouse wait for a running load; the hash of the DDL it runs
        (``pipeline.warehouse.ddl.schema_scripts``), kept as the comment of schema ``ehr``, lets them skip it. An advisory lock serialises the
        first creation when several tasks start at once. Tables an older version created
        unpartitioned are migrated first (``migrate_to_partitioned``).
        """
        fingerprint = ddl_fingerprint()
        if self._schema_comment() == fingerprint:
            return
        self._scalar("SELECT pg_advisory_lock($1)", [SCHEMA_LOCK_KEY])
        try:
            if self._schema_comment() != fingerprint:
                self.migrate_to_partitioned()
                super().ensure_schema()
                self.migrate_primary_keys()
                self.execute_script(f"COMMENT ON SCHEMA ehr IS '{fingerprint}'")
                self._checked_tables.clear()
        finally:
            self._scalar("SELECT pg_advisory_unlock($1)", [SCHEMA_LOCK_KEY])
            self._con.commit()

    def migrate_primary_keys(self) -> dict[str, tuple[str, ...]]:
        """Give live plain tables the primary key their contract now declares (e.g. prescriptions keyed by
        order component, diagnoses by code); returns the tables changed and their new key.

        ``CREATE TABLE IF NOT EXISTS`` leaves an existing table's key alone, and a load into a table whose
        old key is narrower than the rows' grain would fail on real data. The key columns are made NOT NULL
        first; rows that break the new key (none can: the old key was stricter) would fail the change,
        which is then reported and nothing is altered.
        """
        from pipeline.contracts import INPUT_TABLES, OUTPUT_TABLES, contract

        changed: dict[str, tuple[str, ...]] = {}
        for table in INPUT_TABLES + OUTPUT_TABLES:
            options = contract(table).warehouse.postgres
            wanted = tuple(options.primary_key)
            if not wanted or options.partition_by:
                continue
            live = self.query(
                "SELECT a.attname AS name, c.conname AS constraint_name FROM pg_constraint c "
                "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) "
                "WHERE c.conrelid = to_regclass(?) AND c.contype = 'p' "
                "ORDER BY array_position(c.conkey, a.attnum)",
                [f"ehr.{table}"],
            ).to_pylist()
            if not live or tuple(r["name"] for r in live) == wanted:
                continue  # no key (a table created elsewhere) or already the contract's
            not_null = "; ".join(f"ALTER TABLE ehr.{table} ALTER COLUMN {c} SET NOT NULL" for c in wanted)
            self.execute_script(
                f"{not_null}; ALTER TABLE ehr.{table} DROP CONSTRAINT {live[0]['constraint_name']}, "
                f"ADD PRIMARY KEY ({', '.join(wanted)})"
            )
            changed[table] = wanted
            log.warning("primary key of ehr.%s migrated to (%s)", table, ", ".join(wanted))
        return changed

    def migrate_to_partitioned(self) -> dict[str, int]:
        """Move tables that exist unpartitioned but which the DDL partitions by ds into the new layout.

        Warehouses created before the tables were partitioned hold plain tables; ``CREATE TABLE IF NOT
        EXISTS`` would silently keep them. In ONE transaction, for each such table: rename it, create
        the partitioned table from its contract's DDL with one partition per day present, copy the rows,
        carry its grants over; the analyst views are recreated on the new tables (keeping their
        grants) and the old tables dropped. Returns rows moved per table. Called by ensure_schema
        under the schema lock; on a large warehouse run ``ehr-pipeline init-warehouse`` once, in a
        maintenance window, before restarting the scheduler (readers of the table wait meanwhile).
        A table whose columns differ from the new DDL is refused (SchemaMismatchError), nothing changed.
        """
        ddl = partitioned_ddl()
        with self._con.cursor() as cur:
            legacy = [t for t in sorted(ddl) if relkind(cur, t) == "r"]
        self._con.commit()
        if not legacy:
            return {}
        con = self._con
        con.rollback()
        try:
            with con.cursor() as cur:
                moved = migrate_tables(cur, legacy, ddl)
            con.commit()
        except adbc_driver_manager.Error as exc:
            con.rollback()
            raise self._fail(
                f"migrating {', '.join(f'ehr.{t}' for t in legacy)} to day partitions failed, rolled back "
                "(another object may depend on the old tables)",
                exc,
            ) from None
        except BaseException:
            con.rollback()
            raise
        log.warning("migrated to day partitions (rows moved per table): %s", moved)
        return moved

    def _schema_comment(self) -> str | None:
        value = self._scalar(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'ehr'"
        )
        self._con.commit()
        return value

    def _scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        with self._con.cursor() as cur:
            cur.execute(sql, list(params) or None)
            row = cur.fetchone()
        return row[0] if row else None

    # contract of the live tables ------------------------------------------------------------
    def check_live_table(self, table: str) -> LiveTable:
        """The live layout of ``ehr.<table>`` (checked once per connection; see :func:`schema.live_table`)."""
        if (known := self._checked_tables.get(table)) is not None:
            return known
        try:
            with self._con.cursor() as cur:
                found = live_table(cur, table)
        finally:
            self._con.commit()  # end the read transaction, also when the table is refused
        self._checked_tables[table] = found
        return found

    # writing --------------------------------------------------------------------------------
    def replace_days(
        self, tables: Mapping[str, pa.Table], ds_start: date, ds_end: date | None = None
    ) -> dict[str, int]:
        """Replace the days ``ds_start..ds_end`` of each table (see the module docstring for how).

        Every row must have a ds inside the range (a row outside it would survive the rerun of its
        own day and double). A range of more than MAX_DAYS_PER_TRANSACTION days commits once per
        that many days: each day is still replaced atomically, and a failure leaves the earlier
        groups loaded and the failed group as it was (a rerun of the range completes it).
        Phase timings of the last call are kept in ``last_load_timings`` (seconds).
        """
        ds_end = ds_end or ds_start
        if ds_end < ds_start:
            raise WarehouseError(f"empty ds range {ds_start}..{ds_end}: the end is before the start")
        checked = {name: self.check_contract(name, data) for name, data in tables.items()}
        live = {name: self.check_live_table(name) for name in checked}
        self.refuse_rows_outside(checked, ds_start, ds_end)
        self.last_load_timings = dict.fromkeys(LOAD_PHASES, 0.0)
        groups = list(day_groups(ds_start, ds_end, MAX_DAYS_PER_TRANSACTION))
        for start, end in groups:
            group = (
                checked if len(groups) == 1 else {n: rows_between(d, start, end) for n, d in checked.items()}
            )
            self._replace_group(group, live, start, end)
        written = {name: data.num_rows for name, data in checked.items()}
        log.info(
            "replaced ds %s..%s in %d transaction(s): rows %s; seconds %s",
            ds_start, ds_end, len(groups), written,
            {k: round(v, 3) for k, v in self.last_load_timings.items()},
        )  # fmt: skip
        return written

    def _replace_group(
        self, tables: Mapping[str, pa.Table], live: Mapping[str, LiveTable], start: date, end: date
    ) -> None:
        """One transaction: small tables DELETE + COPY, large ones new partitions built aside, then swapped."""
        con, clock = self._con, Clock(self.last_load_timings)
        con.rollback()  # start from a clean transaction
        current = "(lock)"
        try:
            with con.cursor() as cur:
                # Loads of the same tables wait for each other (a concurrent rerun of the day would
                # otherwise miss the other's rows); sorted, so two loads cannot deadlock. Readers are
                # not blocked: no table lock is taken before the swap.
                for name in sorted(tables):
                    cur.execute(f"SELECT pg_advisory_xact_lock({_LOAD_LOCK_CLASS}, hashtext('ehr.{name}'))")
                cur.execute("SET LOCAL datestyle = 'ISO, YMD'")  # partition bounds print as YYYY-MM-DD
                cur.execute(f"SET LOCAL maintenance_work_mem = '{LOAD_MAINTENANCE_WORK_MEM}'")
                clock.lap("lock_wait")
                swaps: list[Swap] = []
                for name, data in tables.items():
                    current = name
                    if live[name].partitioned:
                        swaps += stage_days(cur, name, live[name], data, start, end, clock)
                    else:
                        cur.execute(f"DELETE FROM ehr.{name} WHERE ds BETWEEN $1 AND $2", [start, end])
                        copy_into(cur, name, live[name], data)
                        clock.lap("small_tables")
                current = "(swap of day partitions)"
                swap_partitions(cur, swaps)
                clock.lap("swap")
            con.commit()
            clock.lap("commit")
        except adbc_driver_manager.Error as exc:
            con.rollback()
            raise self._fail(
                f"loading ehr.{current} for ds {start}..{end} failed, rolled back", exc
            ) from None
        except BaseException:
            con.rollback()
            raise

    def record_runs(self, runs: pa.Table) -> None:
        run_key = contract("pipeline_runs").warehouse.postgres.primary_key  # the upsert's conflict target
        runs = _keep_last_per_key(self.check_contract("pipeline_runs", runs), run_key)
        self.check_live_table("pipeline_runs")
        cols = ", ".join(runs.column_names)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in runs.column_names if c not in run_key)
        con = self._con
        con.rollback()
        try:
            with con.cursor() as cur:
                cur.execute(
                    "CREATE TEMP TABLE incoming_runs (LIKE ehr.pipeline_runs INCLUDING DEFAULTS) ON COMMIT DROP"
                )
                if runs.num_rows:
                    cur.adbc_ingest("incoming_runs", runs, mode="append", temporary=True)
                # a stage's rows for a day replace all its earlier rows for that day (see Warehouse.record_runs)
                cur.execute(
                    "DELETE FROM ehr.pipeline_runs p USING (SELECT DISTINCT ds, stage FROM incoming_runs) r "
                    "WHERE p.ds = r.ds AND p.stage = r.stage"
                )
                cur.execute(
                    f"INSERT INTO ehr.pipeline_runs ({cols}) SELECT {cols} FROM incoming_runs "
                    f"ON CONFLICT ({', '.join(run_key)}) DO UPDATE SET {updates}"
                )
            con.commit()
        except adbc_driver_manager.Error as exc:
            con.rollback()
            raise self._fail("recording pipeline_runs failed, rolled back", exc) from None
        except BaseException:
            con.rollback()
            raise

    def forget_runs(self, ds: date, stage_prefixes: Sequence[str]) -> int:
        con = self._con
        con.rollback()
        n = 0
        try:
            with con.cursor() as cur:
                for prefix in stage_prefixes:
                    cur.execute("DELETE FROM ehr.pipeline_runs WHERE ds = $1 AND left(stage, length($2)) = $2",
                                [ds, prefix])
                    n += max(cur.rowcount, 0)
            con.commit()
        except adbc_driver_manager.Error as exc:
            con.rollback()
            raise self._fail("forgetting pipeline_runs failed, rolled back", exc) from None
        return n

    # reading --------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        try:
            with self._con.cursor() as cur:
                cur.execute(translate_placeholders(sql), list(params) or None)
                result = cur.fetch_arrow_table()
            self._con.commit()  # end the read transaction: no snapshot or lock kept between calls
        except adbc_driver_manager.Error as exc:
            self._con.rollback()
            raise self._fail("query failed", exc) from None
        return result

    def select_where_in(
        self,
        table: str,
        column: str,
        values: pa.Array | pa.ChunkedArray,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        schema = arrow_schema(table)
        cols = list(columns) if columns else schema.names
        for name in [*cols, column]:
            if name not in schema.names:
                raise SchemaMismatchError(f"ehr.{table}: no column {name!r} in the contract")
        keys = _as_array(values).cast(schema.field(column).type)
        # One array parameter: the server plans a hash semi-join, whatever the number of keys.
        wanted = pa.record_batch(
            [pa.ListArray.from_arrays(pa.array([0, len(keys)], pa.int32()), keys)], names=["k"]
        )
        select = ", ".join(f"t.{c}" for c in cols)
        try:
            with self._con.cursor() as cur:
                cur.execute(f"SELECT {select} FROM ehr.{table} t WHERE t.{column} = ANY($1)", wanted)
                result = cur.fetch_arrow_table()
            self._con.commit()
        except adbc_driver_manager.Error as exc:
            self._con.rollback()
            raise self._fail(f"select from ehr.{table} failed", exc) from None
        return result.cast(pa.schema([schema.field(c) for c in cols]))


def _keep_last_per_key(runs: pa.Table, key: Sequence[str]) -> pa.Table:
    """Keep the last row of each key (ON CONFLICT cannot touch one row twice in one statement)."""
    if runs.num_rows < 2:
        return runs
    indexed = runs.append_column("__row", pa.array(range(runs.num_rows), pa.int64()))
    last = indexed.group_by(list(key), use_threads=False).aggregate([("__row", "max")])
    keep = pc.sort_indices(last.column("__row_max"))
    return runs.take(pc.take(last.column("__row_max"), keep))
