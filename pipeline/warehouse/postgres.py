"""PostgreSQL warehouse: the production backend.

Bulk loads go through ADBC (``adbc_driver_postgresql``), which streams Arrow record batches with
binary ``COPY`` straight into the target table: no per-row Python, no pandas. A day is replaced
inside one transaction (lock the tables against other writers, delete the ds range, COPY the new
rows, commit), so readers keep seeing the previous version of the day until the commit and a rerun
never duplicates rows. Reads come back as Arrow tables.

Messages never carry the password of the URL: connection errors name host, port, database and user,
and every driver message is scrubbed before it is raised.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc_pg
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import SQL_DIR
from pipeline.schemas import arrow_schema, contract
from pipeline.warehouse.base import SchemaMismatchError, Warehouse, WarehouseError

#: PostgreSQL type (as ``format_type`` prints it) that binary COPY needs for each contract type.
PG_TYPES: dict[str, str] = {
    "int64": "bigint",
    "int32": "integer",
    "float64": "double precision",
    "string": "text",
    "bool": "boolean",
    "date": "date",
    "timestamp": "timestamp without time zone",
}

RUN_KEY: tuple[str, ...] = ("ds", "stage", "table_name")

# Serialises concurrent ensure_schema() calls (mapped tasks opening the warehouse at once).
_SCHEMA_LOCK_KEY = 0x45_48_52_5F_44_44_4C  # "EHR_DDL"
_DEFAULT_CONNECT_TIMEOUT_S = 10


class ConnectionTarget:
    """Host, port, database and user of a PostgreSQL URL, safe to print (never the password)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(_strip_driver(url))
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 5432
        self.database = unquote(parts.path.lstrip("/")) or (unquote(parts.username or "") or "postgres")
        self.user = unquote(parts.username or "") or None
        self.password = unquote(parts.password) if parts.password else None

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
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    # user:password@ inside any URL that slipped into the message
    message = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", message)
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
        self._secrets = [self.target.password]
        try:
            # autocommit off: every write below is one explicit transaction
            self._con = adbc_pg.connect(libpq_uri(url, connect_timeout=connect_timeout))
        except adbc_driver_manager.Error as exc:
            raise WarehouseError(
                f"cannot connect to the PostgreSQL warehouse at {self.target}: {self._clean(exc)}"
            ) from None
        self._checked_tables: set[str] = set()
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
        every task that merely opens the warehouse wait for a running load; the hash of the DDL files,
        kept as the comment of schema ``ehr``, lets them skip it. An advisory lock serialises the
        first creation when several tasks start at once.
        """
        fingerprint = _ddl_fingerprint()
        if self._schema_comment() == fingerprint:
            return
        self._scalar("SELECT pg_advisory_lock($1)", [_SCHEMA_LOCK_KEY])
        try:
            if self._schema_comment() != fingerprint:
                super().ensure_schema()
                self.execute_script(f"COMMENT ON SCHEMA ehr IS '{fingerprint}'")
        finally:
            self._scalar("SELECT pg_advisory_unlock($1)", [_SCHEMA_LOCK_KEY])
            self._con.commit()

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
    def check_live_table(self, table: str) -> None:
        """Raise SchemaMismatchError if ``ehr.<table>`` cannot take rows of its contract as they are.

        Every contract column must exist with the type binary COPY writes; a live column outside the
        contract must be nullable or have a default.
        """
        if table in self._checked_tables:
            return
        with self._con.cursor() as cur:
            cur.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'ehr' AND c.relname = $1 AND a.attnum > 0 AND NOT a.attisdropped",
                [table],
            )
            live = {
                name: (pg_type, not_null, has_default)
                for name, pg_type, not_null, has_default in cur.fetchall()
            }
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
        for name, (_, not_null, has_default) in live.items():
            if name not in names and not_null and not has_default:
                raise SchemaMismatchError(
                    f"ehr.{table}: live column {name!r} is NOT NULL without default and not in the contract; "
                    "nothing was written"
                )
        self._checked_tables.add(table)

    # writing --------------------------------------------------------------------------------
    def replace_days(
        self, tables: Mapping[str, pa.Table], ds_start: date, ds_end: date | None = None
    ) -> dict[str, int]:
        ds_end = ds_end or ds_start
        checked = {name: self.check_contract(name, data) for name, data in tables.items()}
        for name in checked:
            self.check_live_table(name)
        written: dict[str, int] = {}
        con = self._con
        con.rollback()  # start from a clean transaction
        current = "(lock)"
        try:
            with con.cursor() as cur:
                if checked:
                    # Writers of the same tables wait for each other (a concurrent rerun of the day
                    # would otherwise miss the other's rows in its DELETE); readers are not blocked.
                    # Sorted so two loads lock in the same order and cannot deadlock.
                    locked = ", ".join(f"ehr.{name}" for name in sorted(checked))
                    cur.execute(f"LOCK TABLE {locked} IN SHARE ROW EXCLUSIVE MODE")
                for name, data in checked.items():
                    current = name
                    cur.execute(f"DELETE FROM ehr.{name} WHERE ds BETWEEN $1 AND $2", [ds_start, ds_end])
                    if data.num_rows:
                        cur.adbc_ingest(name, data, mode="append", db_schema_name="ehr")
                    written[name] = data.num_rows
            con.commit()
        except adbc_driver_manager.Error as exc:
            con.rollback()
            raise self._fail(
                f"loading ehr.{current} for ds {ds_start}..{ds_end} failed, rolled back", exc
            ) from None
        except BaseException:
            con.rollback()
            raise
        return written

    def record_runs(self, runs: pa.Table) -> None:
        runs = _keep_last_per_key(self.check_contract("pipeline_runs", runs), RUN_KEY)
        self.check_live_table("pipeline_runs")
        cols = ", ".join(runs.column_names)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in runs.column_names if c not in RUN_KEY)
        con = self._con
        con.rollback()
        try:
            with con.cursor() as cur:
                cur.execute(
                    "CREATE TEMP TABLE incoming_runs (LIKE ehr.pipeline_runs INCLUDING DEFAULTS) ON COMMIT DROP"
                )
                if runs.num_rows:
                    cur.adbc_ingest("incoming_runs", runs, mode="append", temporary=True)
                cur.execute(
                    f"INSERT INTO ehr.pipeline_runs ({cols}) SELECT {cols} FROM incoming_runs "
                    f"ON CONFLICT ({', '.join(RUN_KEY)}) DO UPDATE SET {updates}"
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
    for folder in ("postgres", "views"):
        for path in sorted((SQL_DIR / folder).glob("*.sql")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return "ehr-ddl-sha256:" + digest.hexdigest()
