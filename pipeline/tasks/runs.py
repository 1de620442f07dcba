"""Run records and task errors: every task records its run in ``ehr.pipeline_runs``, also when it fails.

A task wraps its work in :func:`recorded`; the rows it adds replace every earlier row of the same stage
and ds, so a rerun (failed or not) shows only its own outcome. The errors say which stage failed and
what to do; :class:`DataQualityError` marks the failures that retrying cannot fix.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from pipeline.config import Settings
from pipeline.contracts import arrow_schema

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A stage cannot go on; the message says which stage, which table and what to do."""


class DataQualityError(PipelineError):
    """The day's data failed a batch check or rows do not add up: retrying cannot help, people must look.

    The DAG turns it into a non-retryable task failure; the CLI reports it like any other error.
    """


class ConfigurationError(PipelineError):
    """A setting or a model is missing or wrong: found before any work where possible; retrying cannot help."""


def _typed_errors() -> tuple[type[BaseException], ...]:
    """Errors whose messages the pipeline writes itself: file, line, column, counts and what to do, no row."""
    from pipeline.config import ConfigError
    from pipeline.risk.errors import RiskError
    from pipeline.sources.base import SourceError

    # and the system's own: a path, a signal, memory; never a value
    return PipelineError, SourceError, ConfigError, RiskError, OSError, MemoryError


def is_deterministic(exc: BaseException) -> bool:
    """Will the same input fail the same way again? Source, data-quality and configuration errors will:
    retrying them only delays the page. Anything else (a lost connection, a killed worker) may pass."""
    from pipeline.config import ConfigError
    from pipeline.risk.errors import RiskError
    from pipeline.sources.base import SourceError

    return isinstance(exc, (DataQualityError, ConfigurationError, SourceError, ConfigError, RiskError))


def safe_error(exc: BaseException) -> str:
    """The error as it may be stored and shown: the pipeline's own messages carry no row content; a library's
    may (a parser or driver quoting the value it choked on), so only its type is kept."""
    if isinstance(exc, _typed_errors()):
        return f"{type(exc).__name__}: {exc}"[:2000]
    return f"{type(exc).__name__} (message withheld: it may quote source data; see the task log)"


@contextmanager
def fails_without_retry() -> Iterator[None]:
    """For the body of an Airflow task: an error that retrying cannot change (:func:`is_deterministic`: bad data,
    a bad source file, a wrong setting) fails the task at once with ``AirflowFailException`` (and pages someone)
    instead of backing off through its retries; its message is :func:`safe_error`'s, so the task log and the UI
    quote no row. Other errors (a lost connection, a killed worker) propagate unchanged to Airflow's retries.

    Both DAG files use it inside their task bodies, where they import the pipeline (never at parse time).
    """
    try:
        yield
    except Exception as exc:
        if not is_deterministic(exc):
            raise
        from airflow.sdk.exceptions import AirflowFailException  # only a task running under Airflow gets here

        raise AirflowFailException(safe_error(exc)) from None


def new_run_id(ds: date, prefix: str = "cli") -> str:
    return f"{prefix}__{ds.isoformat()}__{uuid.uuid4().hex[:8]}"


def _utcnow() -> datetime:
    return datetime.now().replace(microsecond=0)


@dataclass
class RunRecorder:
    """Collects pipeline_runs rows for one stage and writes them (also when the stage fails)."""

    settings: Settings
    run_id: str
    ds: date
    stage: str
    started_at: datetime = field(default_factory=_utcnow)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, table_name: str, rows_in: int | None, rows_out: int | None, rows_quarantined: int | None = 0,
            detail: Mapping[str, Any] | None = None, ds: date | None = None, status: str = "success") -> None:
        self.rows.append(
            {
                "run_id": self.run_id,
                "ds": ds or self.ds,
                "stage": self.stage,
                "table_name": table_name,
                "status": status,
                "started_at": self.started_at,
                "finished_at": _utcnow(),
                "rows_in": rows_in,
                "rows_out": rows_out,
                "rows_quarantined": rows_quarantined,
                "detail": json.dumps(dict(detail), default=str) if detail else None,
            }
        )

    def write(self) -> None:
        if not self.rows:
            return
        from pipeline.warehouse import open_warehouse

        with open_warehouse(self.settings.warehouse) as wh:
            wh.record_runs(pa.Table.from_pylist(self.rows, schema=arrow_schema("pipeline_runs")))


@contextmanager
def recorded(settings: Settings, run_id: str, ds: date, stage: str, table_name: str = "all") -> Iterator[RunRecorder]:
    """Record the stage's rows on success; on failure record one ``failed`` row with the error, then re-raise.

    A stage that raises :class:`DataQualityError` after adding its own ``failed`` rows (per table, with
    counts) keeps them. Either way the rows replace every earlier row of this stage and ds.
    """
    rec = RunRecorder(settings, run_id, ds, stage)
    start = time.perf_counter()
    try:
        yield rec
    except Exception as exc:
        if not (isinstance(exc, DataQualityError) and rec.rows and all(r["status"] == "failed" for r in rec.rows)):
            rec.rows = []
            rec.add(table_name, None, None, None, {"error": safe_error(exc)}, status="failed")
        try:
            rec.write()
        except Exception:
            log.exception("could not record the failed run", extra={"stage": stage, "ds": str(ds)})
        raise
    rec.write()
    log.info("stage done", extra={"stage": stage, "ds": str(ds), "seconds": round(time.perf_counter() - start, 2)})
