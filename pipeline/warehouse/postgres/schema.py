"""The warehouse schema on the server: the DDL applied, migrations of older layouts, the live-table check.

``ensure_schema`` applies the DDL only when it changed (its hash is kept as the comment of schema ``ehr``);
tables an older version created unpartitioned are moved to day partitions first. Before writing, each
table as it is in the database is checked against its contract (:func:`live_table`), so a drifted table
refuses the load instead of taking rows into the wrong columns.

The functions work on a cursor inside the caller's transaction; ``PostgresWarehouse`` commits.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from pipeline.contracts import contract
from pipeline.warehouse.base import SchemaMismatchError
from pipeline.warehouse.ddl import (
    SQL_TYPES,
    create_table_sql,
    partitioned_tables,
    schema_scripts,
    view_scripts,
)
from pipeline.warehouse.postgres.partitions import partition_name

#: PostgreSQL type (as ``format_type`` prints it) that binary COPY needs for each contract type.
PG_TYPES = SQL_TYPES["postgres"]

# Serialises concurrent ensure_schema() calls (mapped tasks opening the warehouse at once).
SCHEMA_LOCK_KEY = 0x45_48_52_5F_44_44_4C  # "EHR_DDL"
_VIEW = re.compile(r"CREATE\s+OR\s+REPLACE\s+VIEW\s+ehr\.(\w+)", re.IGNORECASE)


@dataclass(frozen=True)
class LiveTable:
    """A warehouse table as it is in the database: columns in their physical order, partitioned or not."""

    columns: tuple[str, ...]
    partitioned: bool


# --- the DDL (generated from the contracts by pipeline.warehouse.ddl) ----------------------------
def ddl_fingerprint() -> str:
    """A hash of everything ensure_schema runs (``ddl.schema_scripts("postgres")``): the schema, the tables
    generated from their contracts, the views. ensure_schema skips the DDL when the schema carries it."""
    digest = hashlib.sha256()
    for script in schema_scripts("postgres"):
        digest.update(script.encode())
        digest.update(b"\0")
    return "ehr-ddl-sha256:" + digest.hexdigest()


def partitioned_ddl() -> dict[str, str]:
    """Tables whose contract partitions them by ds in PostgreSQL, with the DDL creating each."""
    return {name: create_table_sql(name, "postgres") for name in partitioned_tables("postgres")}


def _view_names() -> list[str]:
    return [name for text in view_scripts().values() for name in _VIEW.findall(text)]


# --- the catalog ---------------------------------------------------------------------------------
def relkind(cur: Any, name: str) -> str | None:
    """'r' table, 'p' partitioned table, 'v' view, None when ``ehr.<name>`` does not exist."""
    cur.execute("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", [f"ehr.{name}"])
    row = cur.fetchone()
    return row[0] if row else None


def _columns(cur: Any, table: str) -> list[str]:
    cur.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        [f"ehr.{table}"],
    )
    return [name for (name,) in cur.fetchall()]


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


# --- the live-table check ------------------------------------------------------------------------
def live_table(cur: Any, table: str) -> LiveTable:
    """The live layout of ``ehr.<table>``, or SchemaMismatchError if it cannot take rows of its contract.

    Every contract column must exist with the type binary COPY writes; a live column outside the
    contract must be nullable or have a default. A partitioned table must be LIST-partitioned on
    ds and hold exactly the contract columns (a new day partition is created with its columns).
    """
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
    return LiveTable(columns=tuple(live), partitioned=partitioning is not None)


# --- migration to day partitions ------------------------------------------------------------------
def migrate_tables(cur: Any, legacy: list[str], ddl: dict[str, str]) -> dict[str, int]:
    """Move the unpartitioned ``legacy`` tables to day partitions (see PostgresWarehouse.migrate_to_partitioned).

    The analyst views are dropped and recreated on the new tables with their grants; returns rows moved
    per table.
    """
    views = [v for v in _view_names() if relkind(cur, v) == "v"]
    view_grants = {v: _grants(cur, v) for v in views}
    if views:
        cur.execute("DROP VIEW " + ", ".join(f"ehr.{v}" for v in views))
    moved = {table: _migrate_table(cur, table, ddl[table]) for table in legacy}
    for text in view_scripts().values() if views else ():
        cur.executescript(text)
    for view, grants in view_grants.items():
        for grant in grants:
            cur.execute(grant.replace("{name}", f"ehr.{view}"))
    for table in legacy:
        cur.execute(f"DROP TABLE ehr.{table}_unpartitioned")
    return moved


def _migrate_table(cur: Any, table: str, ddl: str) -> int:
    old = f"{table}_unpartitioned"
    grants = _grants(cur, table)
    old_columns = _columns(cur, table)
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
    new_columns = _columns(cur, table)
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
