"""A load killed with SIGKILL in the middle of its COPY leaves the previous version of the day intact.

A child process replaces a day of ``note_entities`` (a day partition built aside) and ``admissions``
(DELETE + COPY); the test kills it while the server reports the COPY in progress, after checking
from another connection that readers are neither blocked nor shown anything of the new load.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date

import psycopg
import pytest

from pipeline.config import REPO_ROOT
from pipeline.contracts import INPUT_TABLES, OUTPUT_TABLES
from pipeline.synth.tables import note_entities_day
from pipeline.warehouse.postgres import PostgresWarehouse
from tests.warehouse.conftest import make_day, sort_rows

pytestmark = pytest.mark.postgres

DAY = date(2026, 3, 1)

# The child slows its Arrow stream down (as a large load over a slow link would be), so that the
# parent can kill it while the COPY is running; everything else is the real replace_days.
CHILD = r"""
import sys, time
from datetime import date

import adbc_driver_manager.dbapi as dbapi
import pyarrow as pa

import pipeline.warehouse.postgres.partitions as partitions
from pipeline.warehouse.postgres import PostgresWarehouse
from pipeline.synth.tables import note_entities_day
from tests.warehouse.conftest import make_day

url, day = sys.argv[1], date.fromisoformat(sys.argv[2])
real_ingest = dbapi.Cursor.adbc_ingest


def slow_ingest(self, table_name, data, *args, **kwargs):
    def batches():
        for batch in data:
            time.sleep(0.3)
            yield batch

    return real_ingest(self, table_name, pa.RecordBatchReader.from_batches(data.schema, batches()), *args, **kwargs)


dbapi.Cursor.adbc_ingest = slow_ingest
partitions.COPY_BATCH_ROWS = 5_000  # the module whose COPY reads it
tables = {"admissions": make_day("admissions", day, rows=50, version=2),
          "note_entities": note_entities_day(100_000, day, seed=2)}
with PostgresWarehouse(url) as warehouse:
    print("loading", flush=True)
    warehouse.replace_days(tables, day)
print("finished", flush=True)
"""


def _state(w: PostgresWarehouse) -> dict[str, object]:
    return {
        "note_entities": sort_rows(
            w.query("SELECT * FROM ehr.note_entities WHERE ds = ?", [DAY])
        ).to_pylist(),
        "admissions": sort_rows(w.query("SELECT * FROM ehr.admissions WHERE ds = ?", [DAY])).to_pylist(),
        "partitions": w.query(
            "SELECT c.relname, c.oid::bigint AS oid FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'ehr.note_entities'::regclass ORDER BY 1"
        ).to_pylist(),
    }


def _stray_tables(con: psycopg.Connection) -> list[str]:
    """Plain tables in schema ehr that no contract names (a staging table left visible)."""
    rows = con.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'ehr' AND c.relkind = 'r' AND NOT c.relispartition AND c.relname <> ALL (%s)",
        (list(INPUT_TABLES + OUTPUT_TABLES),),
    ).fetchall()
    return [r[0] for r in rows]


def _wait_for_copy(con: psycopg.Connection, child: subprocess.Popen[str], timeout_s: float = 60) -> int:
    """Backend pid of the child's COPY once the server has received rows of it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(
                f"the loader exited ({child.returncode}) before it was killed: {child.stdout}"
            )
        row = con.execute(
            "SELECT pid FROM pg_stat_progress_copy WHERE datname = current_database() "
            "AND command = 'COPY FROM' AND tuples_processed > 0"
        ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError("the loader's COPY never started")


def test_postgres_load_killed_mid_copy_keeps_the_previous_day(
    pg_url: str, pg_warehouse: PostgresWarehouse
) -> None:
    w = pg_warehouse
    w.replace_days(
        {
            "admissions": make_day("admissions", DAY, rows=20),
            "note_entities": note_entities_day(3_000, DAY, seed=1),
        },
        DAY,
    )
    before = _state(w)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, pg_url, DAY.isoformat()],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        with psycopg.connect(pg_url, autocommit=True) as observer:
            backend = _wait_for_copy(observer, child)
            # mid-COPY: a reader is not blocked (statement_timeout would fire) and sees the old day only
            observer.execute("SET statement_timeout = '3s'")
            n = observer.execute("SELECT count(*) FROM ehr.note_entities WHERE ds = %s", (DAY,)).fetchone()
            assert n == (3_000,)
            assert _stray_tables(observer) == [], "a staging table is visible to readers"
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            deadline = time.monotonic() + 30  # the server notices the dead client and rolls back
            while observer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone():
                assert time.monotonic() < deadline, "the killed loader's backend is still there"
                time.sleep(0.05)
            assert _stray_tables(observer) == []
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    output = child.stdout.read() if child.stdout else ""
    assert "loading" in output and "finished" not in output, output

    with PostgresWarehouse(pg_url) as reader:
        assert _state(reader) == before, "the previous version of the day changed"
    # the next run replaces the day normally
    again = {
        "admissions": make_day("admissions", DAY, rows=30, version=3),
        "note_entities": note_entities_day(4_000, DAY, seed=3),
    }
    assert w.replace_days(again, DAY) == {"admissions": 30, "note_entities": 4_000}
    after = _state(w)
    assert len(after["note_entities"]) == 4_000 and len(after["admissions"]) == 30
    assert [p["relname"] for p in after["partitions"]] == ["note_entities_20260301"]
    with psycopg.connect(pg_url, autocommit=True) as con:
        assert _stray_tables(con) == []
