"""PostgreSQL warehouse: the production backend.

Bulk loads go through ADBC (``adbc_driver_postgresql``), which streams Arrow record batches with
binary ``COPY``: no per-row Python, no pandas. A day is replaced inside ONE transaction:

* the large tables (those whose contract declares ``partition_by: ds``: labs, notes, note_entities)
  have one partition per day. The new day is copied into a fresh table on the side (invisible to
  other sessions until commit), its primary key and indexes are built in one pass each (far cheaper
  than maintaining three B-trees row by row), and at the end the old partition is detached and
  dropped and the new one attached in its place: a catalog swap of milliseconds. A CHECK constraint
  on ds lets ATTACH skip its validation scan, and indexes built with the parent's definitions are
  adopted instead of rebuilt;
* the small tables are replaced by DELETE of the ds range and COPY.

Concurrent loads of the same table wait for each other on a transaction-level advisory lock, so
readers are never blocked while rows are copied; only the final swap takes the parent's ACCESS
EXCLUSIVE lock, under ``lock_timeout`` and retried from a savepoint. A load that fails or is killed
rolls back entirely: the previous version of the day stays, and no half-built table is left.
Reads come back as Arrow tables.

Messages never carry the password of the URL: connection errors name host, port, database and user,
and every driver message is scrubbed before it is raised or logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc_pg
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import SQL_DIR
from pipeline.contracts import arrow_schema, contract
from pipeline.warehouse.base import SchemaMismatchError, Warehouse, WarehouseError
from pipeline.warehouse.ddl import SQL_TYPES, create_table_sql, partitioned_tables, schema_scripts

log = logging.getLogger(__name__)

#: PostgreSQL type (as ``format_type`` prints it) that binary COPY needs for each contract type.
PG_TYPES = SQL_TYPES["postgres"]

# Serialises concurrent ensure_schema() calls (mapped tasks opening the warehouse at once).
_SCHEMA_LOCK_KEY = 0x45_48_52_5F_44_44_4C  # "EHR_DDL"
# First key of the two-key advisory lock a load holds per table (second key: hashtext of the name).
_LOAD_LOCK_CLASS = 0x45_48_52  # "EHR"
_DEFAULT_CONNECT_TIMEOUT_S = 10

#: Rows per Arrow record batch handed to COPY: the client encodes the next batch while the server
#: parses this one (one giant batch measured slower than 64k-row batches).
COPY_BATCH_ROWS = 65_536
#: Memory for building a new partition's primary key and indexes (SET LOCAL, this load only).
LOAD_MAINTENANCE_WORK_MEM = "256MB"
#: How long the final swap waits for readers to let go of a table, and how often it tries again
#: (from a savepoint: the copied rows and built indexes are kept between attempts).
SWAP_LOCK_TIMEOUT_MS = 5_000
SWAP_ATTEMPTS = 12
#: Days replaced per transaction in a range load. Each day of a partitioned table costs a handful of
#: lock-table slots (table, TOAST, indexes, old partition), and PostgreSQL's shared lock table is
#: max_locks_per_transaction x max_connections (6,400 by default); a month per transaction stays
#: well inside it. Each day is still replaced atomically; see replace_days.
MAX_DAYS_PER_TRANSACTION = 31
_STAGING_SUFFIX = "_load"
# Takes the swap's table locks, retrying on lock timeout or deadlock; each attempt is a
# subtransaction (BEGIN ... EXCEPTION), so a failed one leaves the load's transaction usable.
_LOCK_WITH_RETRIES = """
DO $$
DECLARE attempt integer := 0;
BEGIN
    LOOP
        attempt := attempt + 1;
        BEGIN
            SET LOCAL lock_timeout = {timeout_ms};
            {locks}
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            IF attempt >= {attempts} THEN
                RAISE lock_not_available USING MESSAGE = format(
                    'readers kept the tables locked through %s attempts of {timeout_ms} ms (lock timeout)', attempt);
            END IF;
            PERFORM pg_sleep(least(0.2 * 2 ^ attempt, 5));
        END;
    END LOOP;
END
$$"""


class ConnectionTarget:
    """Host, port, database and user of a PostgreSQL URL, safe to print (never the password)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(_strip_driver(url))
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 5432
        self.database = unquote(parts.path.lstrip("/")) or (unquote(parts.username or "") or "postgres")
        self.user = unquote(parts.username or "") or None
        self.password = unquote(parts.password) if parts.password else None
        # the password as written in the URL (percent-encoded) and decoded: either may be echoed
        self.secrets: tuple[str, ...] = (
            tuple({parts.password, self.password, quote(self.password, safe="")} - {None, ""})  # type: ignore[arg-type]
            if parts.password
            else ()
        )

    def __str__(self) -> str:
        who = f" as user {self.user!r}" if self.user else ""
        return f"host {self.host} port {self.port} database {self.database!r}{who}"


def _strip_driver(url: str) -> str:
    """``postgresql+psycopg://`` (SQLAlchemy style) and ``postgres://`` become ``postgresql://``."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith(("postgresql", "postgres")):
        raise WarehouseError(f"not a PostgreSQL URL (expected postgresql://...): scheme {scheme!r}")
    return "postgresql://" + rest


def libpq_uri(url: str, *, connect_timeout: int = _DEFAULT_CONNECT_TIMEOUT_S) -> str:
    """The URI handed to libpq: driver suffix dropped, Airflow's ``__extra__`` dropped, a connect timeout."""
    parts: SplitResult = urlsplit(_strip_driver(url))
    query = [(k, v) for k, v in parse_qsl(parts.query) if not k.startswith("__")]
    if not any(k == "connect_timeout" for k, _ in query):
        query.append(("connect_timeout", str(connect_timeout)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact(message: str, secrets: Sequence[str | None]) -> str:
    """Remove passwords, URL credentials and row contents from a driver message."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):  # longest first: no partial leaks
        message = message.replace(secret, "***")
    # user:password@ inside any URL that slipped into the message
    message = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", message)
    # ADBC repeats the statement; ours carry no data (values travel as parameters), only bulk: drop it
    message = re.sub(r"Failed to execute query '.*?': (?=ERROR:)", "", message, flags=re.DOTALL)
    message = re.sub(r"\s*Query was: .*?(?=\. SQLSTATE|$)", "", message, flags=re.DOTALL)
    # PostgreSQL echoes a failing row (which can hold note text) in its DETAIL line: keep ids out of logs too.
    message = re.sub(r"DETAIL:\s+Failing row contains .*", "DETAIL: (failing row not shown)", message)
    return message.strip()


def translate_placeholders(sql: str) -> str:
    """Turn ``?`` placeholders into PostgreSQL's ``$1, $2, ...``, leaving literals and comments alone.

    >>> translate_placeholders("SELECT '?' AS q, x FROM t WHERE a = ? AND b = ? -- why?")
    "SELECT '?' AS q, x FROM t WHERE a = $1 AND b = $2 -- why?"
    """
    out: list[str] = []
    i, n, count = 0, len(sql), 0
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:  # doubled quote inside the literal
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1])
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(sql[i:end])
            i = end
        elif ch == "$" and (m := re.match(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$", sql[i:])):
            tag = m.group(0)
            end = sql.find(tag, i + len(tag))
            end = n if end < 0 else end + len(tag)
            out.append(sql[i:end])
            i = end
        elif ch == "?":
            count += 1
            out.append(f"${count}")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


class PostgresWarehouse(Warehouse):
    dialect = "postgres"

    def __init__(self, url: str, *, connect_timeout: int = _DEFAULT_CONNECT_TIMEOUT_S) -> None:
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
        fingerprint = _ddl_fingerprint()
        if self._schema_comment() == fingerprint:
            return
        self._scalar("SELECT pg_advisory_lock($1)", [_SCHEMA_LOCK_KEY])
        try:
            if self._schema_comment() != fingerprint:
                self.migrate_to_partitioned()
                super().ensure_schema()
                self.execute_script(f"COMMENT ON SCHEMA ehr IS '{fingerprint}'")
                self._checked_tables.clear()
        finally:
            self._scalar("SELECT pg_advisory_unlock($1)", [_SCHEMA_LOCK_KEY])
            self._con.commit()

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
        legacy = [t for t in sorted(ddl) if self._relkind(t) == "r"]
        if not legacy:
            return {}
        con = self._con
        con.rollback()
        moved: dict[str, int] = {}
        try:
            with con.cursor() as cur:
                views = [v for v in _view_names() if self._relkind(v, cur) == "v"]
                view_grants = {v: _grants(cur, v) for v in views}
                if views:
                    cur.execute("DROP VIEW " + ", ".join(f"ehr.{v}" for v in views))
                for table in legacy:
                    moved[table] = self._migrate_table(cur, table, ddl[table])
                for path in sorted((SQL_DIR / "views").glob("*.sql")) if views else ():
                    cur.executescript(path.read_text(encoding="utf-8"))
                for view, grants in view_grants.items():
                    for grant in grants:
                        cur.execute(grant.replace("{name}", f"ehr.{view}"))
                for table in legacy:
                    cur.execute(f"DROP TABLE ehr.{table}_unpartitioned")
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

    def _migrate_table(self, cur: Any, table: str, ddl: str) -> int:
        old = f"{table}_unpartitioned"
        grants = _grants(cur, table)
        old_columns = self._columns(cur, table)
        cur.execute(f"ALTER TABLE ehr.{table} RENAME TO {old}")
        # free the names of its key and indexes for the new table (the old one is dropped anyway)
        cur.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype IN ('p', 'u')",
            [f"ehr.{old}"],
        )
        for (name,) in cur.fetchall():
            cur.execute(f'ALTER TABLE ehr.{old} DROP CONSTRAINT "{name}"')
        cur.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass($1)",
            [f"ehr.{old}"],
        )
        for (name,) in cur.fetchall():
            cur.execute(f'DROP INDEX ehr."{name}"')
        cur.executescript(ddl)
        new_columns = self._columns(cur, table)
        if set(old_columns) != set(new_columns):
            raise SchemaMismatchError(
                f"ehr.{table}: cannot migrate to day partitions, its columns differ from "
                f"its contract (only in the old table: {sorted(set(old_columns) - set(new_columns))}, "
                f"only in the new: {sorted(set(new_columns) - set(old_columns))}); nothing was changed"
            )
        cur.execute(f"SELECT DISTINCT ds FROM ehr.{old} ORDER BY ds")
        for (day,) in cur.fetchall():
            cur.execute(
                f"CREATE TABLE ehr.{partition_name(table, day)} PARTITION OF ehr.{table} "
                f"FOR VALUES IN ('{day.isoformat()}')"
            )
        cols = ", ".join(new_columns)
        cur.execute(f"INSERT INTO ehr.{table} ({cols}) SELECT {cols} FROM ehr.{old}")
        rows = int(cur.rowcount)
        for grant in grants:
            cur.execute(grant.replace("{name}", f"ehr.{table}"))
        return rows

    def _relkind(self, name: str, cur: Any = None) -> str | None:
        """'r' table, 'p' partitioned table, 'v' view, None when ``ehr.<name>`` does not exist."""
        sql = "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)"
        if cur is not None:
            cur.execute(sql, [f"ehr.{name}"])
            row = cur.fetchone()
            return row[0] if row else None
        value = self._scalar(sql, [f"ehr.{name}"])
        self._con.commit()
        return value

    @staticmethod
    def _columns(cur: Any, table: str) -> list[str]:
        cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum",
            [f"ehr.{table}"],
        )
        return [name for (name,) in cur.fetchall()]

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
        """The live layout of ``ehr.<table>``, or SchemaMismatchError if it cannot take rows of its contract.

        Every contract column must exist with the type binary COPY writes; a live column outside the
        contract must be nullable or have a default. A partitioned table must be LIST-partitioned on
        ds and hold exactly the contract columns (a new day partition is created with its columns).
        """
        if (known := self._checked_tables.get(table)) is not None:
            return known
        with self._con.cursor() as cur:
            cur.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'ehr' AND c.relname = $1 AND a.attnum > 0 AND NOT a.attisdropped "
                "ORDER BY a.attnum",
                [table],
            )
            live = {
                name: (pg_type, not_null, has_default)
                for name, pg_type, not_null, has_default in cur.fetchall()
            }
            # partitioning: strategy and key column (NULL for a plain table)
            cur.execute(
                "SELECT p.partstrat::text, p.partnatts, a.attname FROM pg_partitioned_table p "
                "LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
                "WHERE p.partrelid = to_regclass($1)",
                [f"ehr.{table}"],
            )
            partitioning = cur.fetchone()
        self._con.commit()
        if not live:
            raise SchemaMismatchError(
                f"ehr.{table}: table does not exist in the warehouse; run ensure_schema"
            )
        wanted = contract(table).columns
        for col in wanted:
            if col.name not in live:
                raise SchemaMismatchError(
                    f"ehr.{table}: column {col.name!r} of the contract is missing in the live table; "
                    "nothing was written (migrate the table, then rerun)"
                )
            if live[col.name][0] != PG_TYPES[col.type]:
                raise SchemaMismatchError(
                    f"ehr.{table}: column {col.name!r} is {live[col.name][0]} in the live table, "
                    f"the contract needs {PG_TYPES[col.type]}; nothing was written"
                )
        names = {c.name for c in wanted}
        extra = [name for name in live if name not in names]
        for name in extra:
            _, not_null, has_default = live[name]
            if not_null and not has_default:
                raise SchemaMismatchError(
                    f"ehr.{table}: live column {name!r} is NOT NULL without default and not in the contract; "
                    "nothing was written"
                )
        if partitioning is not None:
            strategy, key_count, key = partitioning
            if (strategy, key_count, key) != ("l", 1, "ds"):
                raise SchemaMismatchError(
                    f"ehr.{table}: partitioned other than by LIST (ds); the loader replaces one partition "
                    "per day and cannot load it (recreate it from its contract, schemas/tables/)"
                )
            if extra:
                raise SchemaMismatchError(
                    f"ehr.{table}: the partitioned table has columns outside the contract {extra}; a new "
                    "day partition must match the contract exactly: drop them or add them to the contract"
                )
        found = LiveTable(columns=tuple(live), partitioned=partitioning is not None)
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
        groups = list(_day_groups(ds_start, ds_end, MAX_DAYS_PER_TRANSACTION))
        for start, end in groups:
            group = (
                checked if len(groups) == 1 else {n: _rows_between(d, start, end) for n, d in checked.items()}
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
        con, clock = self._con, _Clock(self.last_load_timings)
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
                swaps: list[_Swap] = []
                for name, data in tables.items():
                    current = name
                    if live[name].partitioned:
                        swaps += self._stage_days(cur, name, live[name], data, start, end, clock)
                    else:
                        cur.execute(f"DELETE FROM ehr.{name} WHERE ds BETWEEN $1 AND $2", [start, end])
                        self._copy_into(cur, name, live[name], data)
                        clock.lap("small_tables")
                current = "(swap of day partitions)"
                self._swap(cur, swaps)
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

    def _copy_into(self, cur: Any, name: str, live: LiveTable, data: pa.Table) -> None:
        """Append ``data`` to ``ehr.<name>`` with binary COPY.

        The Arrow columns are put in the live table's physical order (the ADBC driver in use names the
        columns in its COPY, so this is belt and braces, tested with reordered live tables). A live table
        with extra columns outside the contract is filled through a temporary table instead.
        """
        if not data.num_rows:
            return
        if set(live.columns) == set(data.column_names):
            batches = data.select(list(live.columns)).to_reader(max_chunksize=COPY_BATCH_ROWS)
            cur.adbc_ingest(name, batches, mode="append", db_schema_name="ehr")
            return
        staging, cols = f"incoming_{name}", ", ".join(data.column_names)
        cur.execute(
            f"CREATE TEMP TABLE {staging} ON COMMIT DROP AS SELECT {cols} FROM ehr.{name} WITH NO DATA"
        )
        cur.adbc_ingest(staging, data.to_reader(max_chunksize=COPY_BATCH_ROWS), mode="append", temporary=True)
        cur.execute(f"INSERT INTO ehr.{name} ({cols}) SELECT {cols} FROM {staging}")
        cur.execute(f"DROP TABLE {staging}")

    def _stage_days(
        self, cur: Any, name: str, live: LiveTable, data: pa.Table, start: date, end: date, clock: _Clock
    ) -> list[_Swap]:
        """Build the new partition of each day of the range that has rows, next to the live ones."""
        current = self._day_partitions(cur, name, start, end)
        self._drop_leftovers(cur, name)
        indexes = _parent_indexes(cur, name)
        by_day = _split_by_day(data.select(list(live.columns)), start, end)
        swaps = []
        for day in _days(start, end):
            rows, old = by_day.get(day), current.get(day)
            if rows is None and old is None:
                continue
            new = self._build_partition(cur, name, day, rows, indexes, clock) if rows is not None else None
            swaps.append(_Swap(name, day, old, new))
        return swaps

    def _build_partition(
        self, cur: Any, name: str, day: date, rows: pa.Table, indexes: list[_IndexDef], clock: _Clock
    ) -> _NewPartition:
        final = partition_name(name, day)
        staging = _identifier(final + _STAGING_SUFFIX)
        # LIKE copies columns, NOT NULLs, collations and defaults; the CHECK is the partition bound,
        # so ATTACH needs no validation scan. Created in this transaction: invisible to others
        # until commit, and gone with it if the load dies.
        cur.execute(
            f"CREATE TABLE ehr.{staging} (LIKE ehr.{name} INCLUDING DEFAULTS, "
            f"CONSTRAINT ds_is_partition_day CHECK (ds IS NOT NULL AND ds = DATE '{day.isoformat()}'))"
        )
        cur.adbc_ingest(
            staging, rows.to_reader(max_chunksize=COPY_BATCH_ROWS), mode="append", db_schema_name="ehr"
        )
        clock.lap("copy")
        renames = []
        for index in indexes:
            built, wanted = _identifier(f"{staging}_{index.suffix}"), _identifier(f"{final}_{index.suffix}")
            cur.execute(index.create_on(staging, built))
            renames.append((built, wanted))
        clock.lap("index")
        return _NewPartition(staging, final, tuple(renames))

    def _day_partitions(self, cur: Any, name: str, start: date, end: date) -> dict[date, str]:
        """The partitions of ``ehr.<name>`` holding days of the range, by day."""
        cur.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)",
            [f"ehr.{name}"],
        )
        found: dict[date, str] = {}
        for partition, bound in cur.fetchall():
            if bound.strip().upper() == "DEFAULT":
                raise WarehouseError(
                    f"ehr.{name} has a DEFAULT partition ({partition}); the loader keeps one partition per "
                    "day: move its rows into day partitions and drop it"
                )
            days = [date.fromisoformat(d) for d in re.findall(r"'(\d{4}-\d{2}-\d{2})'", bound)]
            inside = [d for d in days if start <= d <= end]
            if inside and len(days) != 1:
                raise WarehouseError(
                    f"ehr.{name}: partition {partition} holds several days ({bound}); the loader replaces one "
                    "partition per day: split it by day first"
                )
            if inside:
                found[inside[0]] = partition
        return found

    def _drop_leftovers(self, cur: Any, name: str) -> None:
        """Drop committed staging tables of this table that are not partitions.

        A load's staging tables live and die with its transaction, so none should exist; one left
        by hand (or a tool that detached a partition) would block the name, so it goes here.
        """
        cur.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'ehr' AND c.relkind = 'r' AND NOT c.relispartition AND c.relname ~ $1",
            [f"^{name}_[0-9]{{8}}{_STAGING_SUFFIX}$"],
        )
        for (leftover,) in cur.fetchall():
            log.warning("dropping leftover staging table ehr.%s", leftover)
            cur.execute(f"DROP TABLE ehr.{leftover}")

    def _swap(self, cur: Any, swaps: Sequence[_Swap]) -> None:
        """Detach and drop the old day partitions, attach the new ones, under a bounded lock wait.

        DETACH needs the parent's ACCESS EXCLUSIVE lock (ATTACH alone: SHARE UPDATE EXCLUSIVE), held
        until commit: so it is taken last, for milliseconds. A long-running reader must neither stall
        the load nor the readers queued behind it, so the locks are requested with lock_timeout and
        retried, SWAP_ATTEMPTS times, inside a PL/pgSQL block: its exception handler rolls back only
        the failed attempt, keeping the copied rows and built indexes (the ADBC driver cannot roll
        back to a savepoint once a statement has failed).
        """
        if not swaps:
            return
        replaced = {s.table for s in swaps if s.old}
        locks = "\n".join(
            f"LOCK TABLE ehr.{t} IN {'ACCESS EXCLUSIVE' if t in replaced else 'SHARE UPDATE EXCLUSIVE'} MODE;"
            for t in sorted({s.table for s in swaps})
        )
        t0 = time.perf_counter()
        cur.execute(
            _LOCK_WITH_RETRIES.format(locks=locks, timeout_ms=SWAP_LOCK_TIMEOUT_MS, attempts=SWAP_ATTEMPTS)
        )
        waited = time.perf_counter() - t0
        if waited * 1000 > SWAP_LOCK_TIMEOUT_MS:
            log.warning("swapping day partitions of %s waited %.1f s for readers", sorted(replaced), waited)
        for swap in swaps:
            if swap.old:
                cur.execute(f"ALTER TABLE ehr.{swap.table} DETACH PARTITION ehr.{swap.old}")
                cur.execute(f"DROP TABLE ehr.{swap.old}")
            if swap.new:
                new = swap.new
                cur.execute(
                    f"ALTER TABLE ehr.{swap.table} ATTACH PARTITION ehr.{new.staging} "
                    f"FOR VALUES IN ('{swap.day.isoformat()}')"
                )
                cur.execute(f"ALTER TABLE ehr.{new.staging} RENAME TO {new.final}")
                for built, wanted in new.index_renames:
                    cur.execute(f"ALTER INDEX ehr.{built} RENAME TO {wanted}")

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


def _ddl_fingerprint() -> str:
    digest = hashlib.sha256()
    for script in schema_scripts("postgres"):
        digest.update(script.encode())
        digest.update(b"\0")
    return "ehr-ddl-sha256:" + digest.hexdigest()


# --- day partitions ------------------------------------------------------------------------------
#: Phases of a load, timed into ``PostgresWarehouse.last_load_timings`` (seconds).
LOAD_PHASES: tuple[str, ...] = ("lock_wait", "small_tables", "copy", "index", "swap", "commit")
_VIEW = re.compile(r"CREATE\s+OR\s+REPLACE\s+VIEW\s+ehr\.(\w+)", re.IGNORECASE)
_INDEX_BODY = re.compile(r" ON (?:ONLY )?\S+ (USING .+)$")


@dataclass(frozen=True)
class LiveTable:
    """A warehouse table as it is in the database: columns in their physical order, partitioned or not."""

    columns: tuple[str, ...]
    partitioned: bool


@dataclass(frozen=True)
class _IndexDef:
    """An index of a partitioned parent, to be built the same way on a new partition (so ATTACH adopts it)."""

    suffix: str  # the parent's index name without the "<table>_" prefix: pkey, hadm_id_idx, ...
    constraint: str | None  # "PRIMARY KEY (...)" / "UNIQUE (...)" for a constraint's index
    body: str  # "USING btree (hadm_id)" for a plain index

    def create_on(self, table: str, index: str) -> str:
        if self.constraint:
            return f"ALTER TABLE ehr.{table} ADD CONSTRAINT {index} {self.constraint}"
        return f"CREATE INDEX {index} ON ehr.{table} {self.body}"


@dataclass(frozen=True)
class _NewPartition:
    staging: str
    final: str
    index_renames: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Swap:
    table: str
    day: date
    old: str | None  # the live partition of the day, if any
    new: _NewPartition | None  # None: the day has no rows any more


class _Clock:
    """Adds the time since the last lap to a phase of ``totals``."""

    def __init__(self, totals: dict[str, float]) -> None:
        self.totals, self.last = totals, time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.totals[phase] = self.totals.get(phase, 0.0) + now - self.last
        self.last = now


def partition_name(table: str, day: date) -> str:
    """``labs`` and 2026-01-02 → ``labs_20260102``, the name of that day's partition."""
    return _identifier(f"{table}_{day:%Y%m%d}")


def _identifier(name: str) -> str:
    """PostgreSQL truncates names at 63 bytes; shorten long ones deterministically instead."""
    if len(name) <= 63:
        return name
    return f"{name[:54]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def partitioned_ddl() -> dict[str, str]:
    """Tables whose contract partitions them by ds in PostgreSQL, with the DDL creating each."""
    return {name: create_table_sql(name, "postgres") for name in partitioned_tables("postgres")}


def _view_names() -> list[str]:
    return [
        name for path in sorted((SQL_DIR / "views").glob("*.sql")) for name in _VIEW.findall(path.read_text())
    ]


def _grants(cur: Any, name: str) -> list[str]:
    """GRANT statements (with ``{name}`` for the object) reproducing the privileges others hold on ``ehr.<name>``."""
    cur.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, a.privilege_type, "
        "a.is_grantable FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
        "LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE c.oid = to_regclass($1) AND a.grantee <> c.relowner",
        [f"ehr.{name}"],
    )
    return [
        f"GRANT {privilege} ON {{name}} TO {grantee}" + (" WITH GRANT OPTION" if grantable else "")
        for grantee, privilege, grantable in cur.fetchall()
    ]


def _parent_indexes(cur: Any, table: str) -> list[_IndexDef]:
    cur.execute(
        "SELECT ic.relname, pg_get_constraintdef(con.oid), con.contype::text, pg_get_indexdef(i.indexrelid) "
        "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
        "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid "
        "WHERE i.indrelid = to_regclass($1) ORDER BY con.contype NULLS LAST, ic.relname",
        [f"ehr.{table}"],
    )
    found = []
    for name, constraint, kind, indexdef in cur.fetchall():
        suffix = name.removeprefix(f"{table}_")
        if kind is not None and kind not in ("p", "u"):
            raise WarehouseError(
                f"ehr.{table}: index {name} backs a constraint of kind {kind!r} the loader cannot rebuild"
            )
        body = _INDEX_BODY.search(indexdef)
        if kind is None and body is None:
            raise WarehouseError(f"ehr.{table}: cannot read the definition of index {name}")
        found.append(_IndexDef(suffix, constraint if kind else None, body.group(1) if body else ""))
    return found


def _days(start: date, end: date) -> Iterator[date]:
    for n in range((end - start).days + 1):
        yield start + timedelta(days=n)


def _day_groups(start: date, end: date, days: int) -> Iterator[tuple[date, date]]:
    """``start..end`` cut into consecutive ranges of at most ``days`` days."""
    while start <= end:
        last = min(end, start + timedelta(days=days - 1))
        yield start, last
        start = last + timedelta(days=1)


def _rows_between(data: pa.Table, start: date, end: date) -> pa.Table:
    ds = data.column("ds")
    lo, hi = pa.scalar(start, pa.date32()), pa.scalar(end, pa.date32())
    return data.filter(pc.and_(pc.greater_equal(ds, lo), pc.less_equal(ds, hi)))


def _split_by_day(data: pa.Table, start: date, end: date) -> dict[date, pa.Table]:
    """Rows of each day that has any (zero-copy slices after one sort when the range has several days)."""
    if not data.num_rows:
        return {}
    if start == end:
        return {start: data}
    ordered = data.take(pc.sort_indices(data.column("ds")))
    out, offset = {}, 0
    for item in pc.value_counts(ordered.column("ds")).to_pylist():  # one entry per day, in sorted order
        out[item["values"]] = ordered.slice(offset, item["counts"])
        offset += item["counts"]
    return out
