"""Replacing days: binary COPY, and the day partitions of the large tables built aside and swapped in.

The large tables (those whose contract declares ``partition_by: ds``: labs, notes, note_entities) have
one partition per day. A load copies the new day into a fresh table on the side (invisible to other
sessions until commit), builds its primary key and indexes in one pass each (far cheaper than
maintaining three B-trees row by row), and at the end detaches and drops the old partition and attaches
the new one in its place: a catalog swap of milliseconds. A CHECK constraint on ds lets ATTACH skip its
validation scan, and indexes built with the parent's definitions are adopted instead of rebuilt. Small
tables are appended to with COPY after the caller deleted the days.

Everything here works on a cursor inside the caller's transaction (``PostgresWarehouse._replace_group``),
which owns the commit and the rollback.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import lake
from pipeline.warehouse.base import WarehouseError

if TYPE_CHECKING:
    from pipeline.warehouse.postgres.schema import LiveTable

log = logging.getLogger(__name__)

#: Rows per Arrow record batch handed to COPY: the client encodes the next batch while the server
#: parses this one (one giant batch measured slower than 64k-row batches).
COPY_BATCH_ROWS = 65_536
#: How long the final swap waits for readers to let go of a table, and how often it tries again
#: (from a savepoint: the copied rows and built indexes are kept between attempts).
SWAP_LOCK_TIMEOUT_MS = 5_000
SWAP_ATTEMPTS = 12
#: Phases of a load, timed into ``PostgresWarehouse.last_load_timings`` (seconds).
LOAD_PHASES: tuple[str, ...] = ("lock_wait", "small_tables", "copy", "index", "swap", "commit")
_STAGING_SUFFIX = "_load"
_INDEX_BODY = re.compile(r" ON (?:ONLY )?\S+ (USING .+)$")
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
class Swap:
    table: str
    day: date
    old: str | None  # the live partition of the day, if any
    new: _NewPartition | None  # None: the day has no rows any more


class Clock:
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


# --- writing, inside the caller's transaction ---------------------------------------------------
def copy_into(cur: Any, name: str, live: LiveTable, data: pa.Table) -> None:
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


def stage_days(
    cur: Any, name: str, live: LiveTable, data: pa.Table, start: date, end: date, clock: Clock
) -> list[Swap]:
    """Build the new partition of each day of the range that has rows, next to the live ones.

    Returns the swaps for :func:`swap_partitions`: a day with rows gets its new partition, a day whose
    rows are gone loses its old one.
    """
    current = _day_partitions(cur, name, start, end)
    _drop_leftovers(cur, name)
    indexes = _parent_indexes(cur, name)
    by_day = _split_by_day(data.select(list(live.columns)), start, end)
    swaps = []
    for day in _days(start, end):
        rows, old = by_day.get(day), current.get(day)
        if rows is None and old is None:
            continue
        new = _build_partition(cur, name, day, rows, indexes, clock) if rows is not None else None
        swaps.append(Swap(name, day, old, new))
    return swaps


def _build_partition(
    cur: Any, name: str, day: date, rows: pa.Table, indexes: list[_IndexDef], clock: Clock
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


def _day_partitions(cur: Any, name: str, start: date, end: date) -> dict[date, str]:
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


def _drop_leftovers(cur: Any, name: str) -> None:
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


def swap_partitions(cur: Any, swaps: Sequence[Swap]) -> None:
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


# --- days ----------------------------------------------------------------------------------------
def _days(start: date, end: date) -> Iterator[date]:
    for n in range((end - start).days + 1):
        yield start + timedelta(days=n)


def day_groups(start: date, end: date, days: int) -> Iterator[tuple[date, date]]:
    """``start..end`` cut into consecutive ranges of at most ``days`` days."""
    while start <= end:
        last = min(end, start + timedelta(days=days - 1))
        yield start, last
        start = last + timedelta(days=1)


def rows_between(data: pa.Table, start: date, end: date) -> pa.Table:
    ds = data.column("ds")
    lo, hi = pa.scalar(start, pa.date32()), pa.scalar(end, pa.date32())
    return data.filter(pc.and_(pc.greater_equal(ds, lo), pc.less_equal(ds, hi)))


def _split_by_day(data: pa.Table, start: date, end: date) -> dict[date, pa.Table]:
    """Rows of each day that has any (zero-copy slices after one sort when the range has several days)."""
    if start == end:
        return {start: data} if data.num_rows else {}
    return lake.split_by_day(data)
