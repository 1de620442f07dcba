"""One run per day at a time: a per-day lock held while a run (or a DAG task) works on that day.

Two runs of one day interleave badly: one clears the enrichment the other is about to load, and the report
then says success with 0 entities while the NER record says 1,015. The lock lives where every run of a
warehouse can see it:

- PostgreSQL: a session advisory lock on the warehouse database (key: a namespace + the day), held by the
  connection for the run and released when it ends, also when the process is killed;
- DuckDB: an exclusive ``flock`` on ``<warehouse folder>/.locks/ds=<day>.lock``, released by the kernel when
  the process ends.

A second run of the day waits, saying so in the log (and to ``on_wait``), up to ``EHR_DAY_LOCK_WAIT_SECONDS``;
then it fails with :class:`DayLockedError`, naming who holds the day. Different days never wait on each other.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

from pipeline.config import Settings
from pipeline.tasks.runs import PipelineError

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
_NAMESPACE = 0x45485244 << 32  # "EHRD": keeps our advisory keys apart from other users of the database


class DayLockedError(PipelineError):
    """Another run holds the day and did not let go in time: try again once it has finished."""


def advisory_key(ds: date) -> int:
    """The PostgreSQL advisory lock key of ``ds`` (a bigint)."""
    return _NAMESPACE + ds.toordinal()


def _holder(run_id: str) -> str:
    return json.dumps({"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                       "since": datetime.now().replace(microsecond=0).isoformat()})


@contextmanager
def day_lock(settings: Settings, ds: date, *, run_id: str = "", wait_seconds: float | None = None,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock of ``ds`` for the block; wait for it up to ``wait_seconds`` (default: the setting)."""
    wait = settings.day_lock_wait_seconds if wait_seconds is None else wait_seconds
    url = settings.warehouse
    lock = _PostgresLock(url, ds) if url.startswith(("postgresql", "postgres")) else _FileLock(url, ds)
    deadline = time.monotonic() + wait
    told = False
    try:
        while not lock.try_acquire(run_id):
            holder = lock.holder()
            if time.monotonic() >= deadline:
                raise DayLockedError(
                    f"ds={ds} is being run by another run ({holder}); gave up after waiting {wait:g}s "
                    "(EHR_DAY_LOCK_WAIT_SECONDS). Run it again once that run has finished."
                )
            if not told:
                message = f"ds={ds} is being run by another run ({holder}): waiting up to {wait:g}s"
                log.warning(message, extra={"ds": str(ds)})
                if on_wait is not None:
                    on_wait(message)
                told = True
            time.sleep(POLL_SECONDS)
        yield
    finally:
        lock.release()


class _FileLock:
    def __init__(self, url: str, ds: date) -> None:
        folder = Path(url.removeprefix("duckdb:///").partition("?")[0]).parent / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"ds={ds.isoformat()}.lock"
        self._fh = None

    def try_acquire(self, run_id: str) -> bool:
        fh = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(_holder(run_id))
        fh.flush()
        self._fh = fh
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8") or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class _PostgresLock:
    def __init__(self, url: str, ds: date) -> None:
        from pipeline.warehouse import open_warehouse

        self.key = advisory_key(ds)
        self._wh = open_warehouse(url)
        self._held = False

    def try_acquire(self, run_id: str) -> bool:
        self._held = bool(self._wh.query("SELECT pg_try_advisory_lock(?) AS ok", [self.key]).column("ok")[0].as_py())
        return self._held

    def holder(self) -> str:
        rows = self._wh.query(
            "SELECT a.pid, a.client_addr::text AS client, a.application_name AS app, "
            "a.backend_start::text AS since FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND "
            "((l.classid::bigint << 32) | l.objid::bigint) = ?", [self.key]
        ).to_pylist()
        return json.dumps(rows[0], default=str) if rows else "unknown"

    def release(self) -> None:
        try:
            if self._held:
                self._wh.query("SELECT pg_advisory_unlock(?) AS ok", [self.key])
        finally:
            self._wh.close()
