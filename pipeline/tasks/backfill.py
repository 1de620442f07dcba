"""History backfill: one pass over the source, then the range in chunks, each resumable and version-keyed.

1. **stage** (:func:`stage_source`): every source table is read once, as a stream, into a Parquet staging copy
   (:mod:`pipeline.sources.stream`) under ``<lake>/raw/_staged/<fingerprint>/``; the fingerprint names the
   source (files, sizes, modification times; or the SQL URL) and the day shift, so a changed source is staged
   anew and an unchanged one is not read again.
2. **chunks** (:func:`plan_chunks`, default a calendar month, ``EHR_BACKFILL_CHUNK``, planned from the staged
   copy's rows per day: a chunk without rows is left out, one with more than ``EHR_BACKFILL_CHUNK_ROWS`` is cut at
   a day boundary, so a chunk's memory follows the budget, not the source): each chunk runs the stages
   ``extract → validate → ner → risk → load`` on the days of the chunk that have rows (a table without rows on
   such a day has no partition; a whole MIMIC history is ~90 shifted years of which a few thousand days hold data):

   - extract: :func:`~pipeline.sources.extract_range` over the staging copy for the chunk's days, written to
     the raw lake as day partitions (the nightly layout; the admissions open at the chunk's end under its last
     day) and recorded per day like the nightly ``extract``;
   - validate: the chunk as one batch through :func:`~pipeline.validate.validate_batch` with the warehouse's
     known admissions (:func:`pipeline.tasks.nightly.known_context`, like the nightly run), written back per day
     to ``lake/validated`` and recorded per day (so ``ehr-pipeline report`` and its conservation check work on
     history days); a failed batch leaves its quarantine and results in the warehouse;
   - ner / risk: the nightly mapped functions :func:`~pipeline.tasks.nightly.ner` and
     :func:`~pipeline.tasks.nightly.risk` on every validated part of every day; risk reads history as of each
     day from the lake (:mod:`pipeline.tasks.asof`), which holds every day the backfill validated;
   - load: :func:`load_chunk`, the chunk's days in one warehouse call (what ``nightly.load`` does, per day
     atomic, without opening the warehouse once per day).

3. **records** (:func:`chunk_records`): each chunk × stage is one row of ``ehr.pipeline_runs`` (``ds`` = the
   chunk's first day, ``stage`` = ``backfill.<stage>``, ``table_name`` = ``chunk``) whose detail holds the
   chunk's last day, the versions that made it (:func:`current_versions`: code, contracts, validation rules,
   NER model and rules, risk model and rules) and the run of each stage it read. :func:`plan_work` decides from
   those records what a rerun does (``--reprocess missing|failed|stale|all``): a stage runs when it is not
   done, and everything after a stage that runs runs too, so a new NER model reprocesses NER, risk and load
   of history without extracting again.

A chunk whose stage fails is recorded ``failed`` and the next chunk goes on; :func:`run_backfill` returns the
failed chunks (the CLI exits non-zero listing them). ``kill -9`` at any point: lake partitions are replaced
atomically (:mod:`pipeline.lake`), the warehouse loads a day in one transaction, and an unfinished stage has
no success record, so the same command redoes it and ends with the same counts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import lake
from pipeline.config import REPO_ROOT, SCHEMAS_DIR, Settings, load_settings
from pipeline.contracts import INPUT_TABLES, arrow_schema, raw_arrow_schema
from pipeline.memory import fix_mmap_threshold, release_memory
from pipeline.tasks import nightly
from pipeline.tasks.nightly import ENRICHED, OPEN_ADMISSIONS, QUARANTINE, RAW, REJECTS, RESULTS, VALIDATED
from pipeline.tasks.runs import ConfigurationError, DataQualityError, PipelineError, RunRecorder, new_run_id

log = logging.getLogger(__name__)

STAGES = ("extract", "validate", "ner", "risk", "load")
# what each stage reads (a stage whose input was remade is remade too)
INPUTS: dict[str, tuple[str, ...]] = {
    "extract": (), "validate": ("extract",), "ner": ("validate",), "risk": ("validate", "ner"),
    "load": ("validate", "ner", "risk"),
}
# the versions that make each stage's output
VERSION_KEYS: dict[str, tuple[str, ...]] = {
    "extract": ("code", "contracts"),
    "validate": ("code", "contracts", "rules"),
    "ner": ("code", "ner_model", "nlp_rules"),
    "risk": ("code", "risk_model", "risk_rules"),
    "load": ("code", "contracts"),
}
RECORD_PREFIX = "backfill."
RECORD_TABLE = "chunk"
Reprocess = Literal["missing", "failed", "stale", "all"]
REPROCESS_MODES: tuple[str, ...] = ("missing", "failed", "stale", "all")
STAGED = "_staged"


class BackfillError(ConfigurationError):
    """The backfill cannot start (bad range or chunk size, unreadable source, a missing model); no chunk was run.
    Deterministic: the same command fails the same way until it or the setup changes (never retried)."""


# --- chunks --------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Chunk:
    start: date
    end: date

    @property
    def days(self) -> list[date]:
        return nightly.days(self.start, self.end)

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def parse_chunk(spec: str) -> tuple[str, int]:
    """``month``, ``week``, ``N`` or ``N days`` / ``Nd`` → (unit, days per chunk; 0 for calendar months).

    >>> parse_chunk("month"), parse_chunk("week"), parse_chunk("10 days"), parse_chunk("3d")
    (('month', 0), ('week', 7), ('days', 10), ('days', 3))
    """
    text = spec.strip().lower()
    if text in ("month", "monthly", "1 month"):
        return "month", 0
    if text in ("week", "weekly", "1 week"):
        return "week", 7
    match = re.fullmatch(r"(\d+)\s*(d|day|days)?", text)
    if match and int(match.group(1)) > 0:
        return "days", int(match.group(1))
    raise BackfillError(f"chunk size {spec!r}: expected month, week or a number of days (e.g. 10, '10 days')")


def plan_chunks(start: date, end: date, chunk: str = "month", *, rows_per_day: Mapping[date, int] | None = None,
                max_rows: int = 0) -> list[Chunk]:
    """``start..end`` cut into chunks: calendar months, ISO weeks (Monday to Sunday) or N days from ``start``;
    the first and last chunk are clipped to the range.

    With ``rows_per_day`` (the staged copy's, :func:`pipeline.sources.stream.rows_per_day`), a chunk without rows
    is left out, and one holding more than ``max_rows`` rows (when > 0) is cut before the day that would pass
    it (a single day bigger than the budget is a chunk of its own).

    >>> [str(c) for c in plan_chunks(date(2026, 1, 20), date(2026, 3, 3))]
    ['2026-01-20..2026-01-31', '2026-02-01..2026-02-28', '2026-03-01..2026-03-03']
    >>> [str(c) for c in plan_chunks(date(2026, 1, 1), date(2026, 1, 12), "week")]
    ['2026-01-01..2026-01-04', '2026-01-05..2026-01-11', '2026-01-12..2026-01-12']
    >>> rows = {date(2026, 1, 2): 60, date(2026, 1, 3): 60, date(2026, 1, 9): 10, date(2026, 3, 1): 5}
    >>> [str(c) for c in plan_chunks(date(2026, 1, 1), date(2026, 3, 31), rows_per_day=rows, max_rows=100)]
    ['2026-01-01..2026-01-02', '2026-01-03..2026-01-31', '2026-03-01..2026-03-31']
    """
    if end < start:
        raise BackfillError(f"the range ends ({end}) before it starts ({start})")
    unit, size = parse_chunk(chunk)
    chunks, current = [], start
    while current <= end:
        if unit == "month":
            stop = (current.replace(day=1) + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        elif unit == "week":
            stop = current + timedelta(days=6 - current.weekday())
        else:
            stop = current + timedelta(days=size - 1)
        stop = min(stop, end)
        chunks.append(Chunk(current, stop))
        current = stop + timedelta(days=1)
    if rows_per_day is None:
        return chunks
    return [piece for c in chunks for piece in _cut_by_rows(c, rows_per_day, max_rows)]


def _cut_by_rows(chunk: Chunk, rows_per_day: Mapping[date, int], max_rows: int) -> list[Chunk]:
    """``chunk`` without rows → none; else cut before each day that would take it over ``max_rows``."""
    busy = sorted((d, n) for d, n in rows_per_day.items() if chunk.start <= d <= chunk.end and n > 0)
    if not busy:
        return []
    pieces, first, total = [], chunk.start, 0
    for day, n in busy:
        if max_rows and total and total + n > max_rows:
            pieces.append(Chunk(first, day - timedelta(days=1)))
            first, total = day, 0
        total += n
    pieces.append(Chunk(first, chunk.end))
    return pieces


# --- versions ------------------------------------------------------------------------------------
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def tree_digest(root: Path, pattern: str = "*") -> str | None:
    """A short content hash of the files under ``root`` (names and bytes), None when there are none."""
    if not root.exists():
        return None
    files = [root] if root.is_file() else sorted(p for p in root.rglob(pattern) if p.is_file()
                                                 and "__pycache__" not in p.parts)
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root) if root.is_dir() else path.name).encode())
        digest.update(_file_digest(path).encode())
    return digest.hexdigest()[:16]


def current_versions(settings: Settings) -> dict[str, str | None]:
    """The versions in force: code (package version and a hash of its sources), contracts, validation
    rules, NER model and rules, risk model and rules. A model that is not there is ``None``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("ehr-pipeline")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout without install
        package = "0"
    return {
        "code": f"{package}+{tree_digest(REPO_ROOT / 'pipeline', '*.py')}",
        "contracts": tree_digest(SCHEMAS_DIR / "tables"),
        "rules": tree_digest(SCHEMAS_DIR / "expectations"),
        "nlp_rules": tree_digest(SCHEMAS_DIR / "nlp"),
        "risk_rules": tree_digest(SCHEMAS_DIR / "risk"),
        "ner_model": tree_digest(settings.ner_model_dir),
        "risk_model": tree_digest(settings.risk_model_dir),
    }


# --- records -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageRecord:
    """What ``ehr.pipeline_runs`` says of one stage of one chunk."""

    status: str  # success | failed | skipped
    run_id: str
    end: date
    versions: Mapping[str, str | None] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)  # stage → run_id of the output it read
    detail: Mapping[str, Any] = field(default_factory=dict)


def chunk_records(settings: Settings, start: date, end: date) -> dict[date, dict[str, StageRecord]]:
    """The recorded stages of the chunks starting in ``start..end``: chunk start → stage → record."""
    from pipeline.warehouse import open_warehouse

    with open_warehouse(settings.warehouse) as wh:
        rows = wh.query(
            "SELECT ds, stage, status, run_id, detail FROM ehr.pipeline_runs "
            "WHERE table_name = ? AND stage LIKE ? AND ds >= ? AND ds <= ?",
            [RECORD_TABLE, RECORD_PREFIX + "%", start, end],
        ).to_pylist()
    out: dict[date, dict[str, StageRecord]] = {}
    for row in rows:
        detail = json.loads(row["detail"] or "{}")
        out.setdefault(row["ds"], {})[row["stage"][len(RECORD_PREFIX):]] = StageRecord(
            row["status"], row["run_id"], date.fromisoformat(detail.get("end", row["ds"].isoformat())),
            detail.get("versions", {}), detail.get("inputs", {}), detail,
        )
    return out


def _record(settings: Settings, chunk: Chunk, stage: str, run_id: str, status: str, versions: Mapping[str, Any],
            inputs: Mapping[str, str], extra: Mapping[str, Any] | None = None) -> None:
    rec = RunRecorder(settings, run_id, chunk.start, RECORD_PREFIX + stage)
    detail = {"end": chunk.end.isoformat(), "versions": {k: versions.get(k) for k in VERSION_KEYS[stage]},
              "inputs": dict(inputs), **(extra or {})}
    rec.add(RECORD_TABLE, None, None, None, detail, status=status)
    rec.write()


# --- what to run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChunkWork:
    chunk: Chunk
    stages: tuple[str, ...]  # in order; empty: nothing to do
    reasons: Mapping[str, str]  # stage → why it runs


def stage_needed(stage: str, record: StageRecord | None, chunk: Chunk, versions: Mapping[str, Any],
                 run_ids: Mapping[str, str], reprocess: str, skip: Iterable[str]) -> str | None:
    """Why ``stage`` of ``chunk`` must run (None: it need not). ``run_ids``: the run each done input stage has."""
    if reprocess == "all":
        return "reprocess all"
    if record is None or record.end != chunk.end:
        return None if reprocess == "failed" else "never ran"
    if record.status == "failed":
        return "failed before"
    if reprocess == "failed":
        return None
    if record.status == "skipped":
        return None if stage in skip else "skipped before"
    changed_inputs = [s for s in INPUTS[stage] if s in run_ids and record.inputs.get(s) != run_ids[s]]
    if changed_inputs:
        return f"{', '.join(changed_inputs)} redone since"
    if reprocess == "stale":
        stale = [k for k in VERSION_KEYS[stage] if record.versions.get(k) != versions.get(k)]
        if stale:
            return f"made by another version ({', '.join(stale)})"
    return None


def plan_work(chunks: Sequence[Chunk], records: Mapping[date, Mapping[str, StageRecord]], versions: Mapping[str, Any],
              reprocess: str = "missing", skip: Iterable[str] = (), raw_kept: bool = True) -> list[ChunkWork]:
    """Per chunk, the stages to run: those :func:`stage_needed` names, and every stage after one that runs.

    ``raw_kept=False`` (``EHR_RAW_RETENTION=until_loaded``): a loaded chunk's raw free-text partitions are gone,
    so validating it again extracts it again first."""
    if reprocess not in REPROCESS_MODES:
        raise BackfillError(f"--reprocess {reprocess!r}: expected one of {', '.join(REPROCESS_MODES)}")
    skip = tuple(skip)
    work = []
    for chunk in chunks:
        recs = records.get(chunk.start, {})
        run_ids = {s: r.run_id for s, r in recs.items() if r.status in ("success", "skipped") and r.end == chunk.end}
        stages: list[str] = []
        reasons: dict[str, str] = {}
        for stage in STAGES:
            why = stage_needed(stage, recs.get(stage), chunk, versions, run_ids, reprocess, skip)
            if why is None and any(s in stages for s in INPUTS[stage]):
                why = "an input is redone"
            if why is not None:
                stages.append(stage)
                reasons[stage] = why
                run_ids.pop(stage, None)
        loaded = recs.get("load") is not None and recs["load"].status == "success"
        if not raw_kept and loaded and "validate" in stages and "extract" not in stages:
            stages.insert(0, "extract")
            reasons["extract"] = "its raw free text was removed once loaded (EHR_RAW_RETENTION=until_loaded)"
        work.append(ChunkWork(chunk, tuple(stages), reasons))
    return work


# --- the one pass over the source ---------------------------------------------------------------
def source_fingerprint(settings: Settings) -> str:
    """Names the source as it is now: its files (names, sizes, modification times) or its URL, and the day shift."""
    parts: list[str] = [settings.source_layout, str(settings.source_day_shift)]
    if settings.source_layout == "sql":
        # a database changes without a trace we can read cheaply: its copy is made again each calendar day
        parts += [str(settings.source_url), str(settings.source_schemas), date.today().isoformat()]
    else:
        root = settings.source_dir
        if not root.is_dir():
            raise BackfillError(f"source folder not found: {root} (set EHR_SOURCE_PATH)")
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            stat = path.stat()
            parts.append(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def staged_dir(settings: Settings) -> Path:
    return settings.lake_dir / RAW / STAGED / source_fingerprint(settings)


def stage_source(settings: Settings, *, on_table: Callable[[str, int], None] | None = None) -> Path:
    """Read every source table once into the staging copy (tables already staged are kept); returns its folder."""
    fix_mmap_threshold()  # the reader's multi-MB buffers: mapped and unmapped, not left in fragmented heaps
    from pipeline.sources import open_source
    from pipeline.sources.stream import (
        ADMISSION_DATED,
        STAGING_ORDER,
        admission_days,
        clean_leftovers,
        stage_table,
        staged_tables,
    )

    folder = staged_dir(settings)
    clean_leftovers(folder)
    done = staged_tables(folder)
    missing = [t for t in STAGING_ORDER if t not in done]
    if missing:
        reader = open_source(settings.source_layout, settings.source_dir, settings.source_url, settings.source_schemas)
        days = None
        for table in missing:
            if table in ADMISSION_DATED and days is None:
                days = admission_days(folder, settings.source_day_shift)
            rows = stage_table(reader, table, folder, day_shift=settings.source_day_shift, admissions=days)
            log.info("staged", extra={"table": table, "rows": rows})
            if on_table:
                on_table(table, rows)
    # copies of an older state of the source are never read again
    for old in (settings.lake_dir / RAW / STAGED).glob("*"):
        if old.is_dir() and old.name != folder.name:
            import shutil

            shutil.rmtree(old, ignore_errors=True)
    return folder


# --- the stages of a chunk -----------------------------------------------------------------------
# A chunk's stages write and read only the days that have rows: a whole MIMIC history spans ~90 shifted years
# of which a few thousand days hold data, so a partition (and a run record) per calendar day would be hundreds of
# thousands of empty files. A day's table without rows has no partition; readers of a chunk take it as empty.
def _split_by_day(table: pa.Table, chunk: Chunk) -> dict[date, pa.Table]:
    """The rows of each day of ``chunk`` that has any; a row dated outside the chunk is refused, never dropped."""
    by_day = lake.split_by_day(table)
    outside = [d for d in by_day if d is None or not chunk.start <= d <= chunk.end]
    if outside:
        raise PipelineError(f"chunk {chunk}: {sum(by_day[d].num_rows for d in outside)} rows dated outside it "
                            f"({', '.join(str(d) for d in outside[:3])})")
    return by_day


def _written_days(settings: Settings, stage: str, tables: Iterable[str], chunk: Chunk,
                  complete_only: bool = True) -> list[date]:
    """The days of ``chunk`` with a partition of any of ``tables`` under ``stage``, in order."""
    after = chunk.end + timedelta(days=1)
    return sorted({d for t in tables for d in lake.list_days(settings.lake_dir, stage, t, first=chunk.start,
                                                             before=after, complete_only=complete_only)})


def _replace_days(settings: Settings, stage: str, name: str, chunk: Chunk, by_day: Mapping[date, pa.Table],
                  **write: Any) -> None:
    """Write each day's rows of ``name`` as its partition; the chunk's other days lose theirs (a rerun whose
    source no longer has rows on a day leaves nothing of the earlier run there)."""
    for day in _written_days(settings, stage, [name], chunk, complete_only=False):
        if day not in by_day:
            lake.clear_partition(settings.lake_dir, stage, name, day)
    for day, rows in by_day.items():
        lake.write_partition(settings.lake_dir, stage, name, day, rows, **write)


def _read_days(settings: Settings, stage: str, name: str, days: Sequence[date], schema: pa.Schema) -> pa.Table:
    """``name``'s rows of ``days`` (a day without its partition has none)."""
    if not days:
        return schema.empty_table()
    written = set(lake.list_days(settings.lake_dir, stage, name, first=min(days), before=max(days) + timedelta(days=1),
                                 complete_only=False))
    return pa.concat_tables([schema.empty_table()] + [
        lake.read_partition(settings.lake_dir, stage, name, d, schema) for d in days if d in written])


def _detail(chunk: Chunk, name: str, absent: Mapping[str, str]) -> dict[str, Any]:
    """A per-day record's detail: the chunk, and the warning of an optional table the source does not have."""
    detail: dict[str, Any] = {"backfill_chunk": str(chunk)}
    if name in absent:
        detail["warnings"] = [nightly.absent_warning(name, absent[name])]
    return detail


def _count_on(table: pa.Table, column: str, value: str) -> int:
    return int(pc.sum(pc.equal(table.column(column), value)).as_py() or 0)


def extract_chunk(chunk: Chunk, *, run_id: str, settings: Settings, staged: Path) -> dict[str, int]:
    """The chunk's rows from the staging copy → raw lake day partitions; extract runs recorded per day."""
    from pipeline.sources import extract_range
    from pipeline.sources.stream import StagedReader

    result = extract_range(StagedReader(staged, chunk.start, chunk.end), chunk.start, chunk.end,
                           day_shift=settings.source_day_shift)
    rejects = result.rejects.set_column(result.rejects.column_names.index("run_id"), "run_id",
                                        pa.array([run_id] * result.rejects.num_rows, pa.string()))
    rejects_by_day = _split_by_day(rejects, chunk)
    by_table = {name: _split_by_day(table, chunk) for name, table in result.tables.items()}
    for name, by_day in by_table.items():
        _replace_days(settings, RAW, name, chunk, by_day, part_rows=settings.part_rows)
    _replace_days(settings, RAW, REJECTS, chunk, rejects_by_day, part_rows=1_000_000, bucket_key="")
    # the admissions open at the end of the chunk: what the nightly extract of its last day writes
    lake.write_partition(settings.lake_dir, RAW, OPEN_ADMISSIONS, chunk.end, result.open_admissions,
                         part_rows=1_000_000, bucket_key="")
    lake.write_partition(settings.lake_dir, RAW, nightly.ABSENT, chunk.end, nightly.absent_table(result.absent),
                         part_rows=1_000_000, bucket_key="")
    # recorded per day with rows (every table of such a day, zeros included), like the nightly extract
    rec = RunRecorder(settings, run_id, chunk.start, "extract")
    empty_rejects = rejects.schema.empty_table()
    for day in sorted({d for by_day in (*by_table.values(), rejects_by_day) for d in by_day}):
        for name, by_day in by_table.items():
            n = by_day[day].num_rows if day in by_day else 0
            set_aside = _count_on(rejects_by_day.get(day, empty_rejects), "source_table", name)
            rec.add(name, n + set_aside, n, set_aside, _detail(chunk, name, result.absent), ds=day)
    rec.write()
    return {name: c["rows_extracted"] for name, c in result.counts().items()}


# What each validated admissions / patients partition holds for _known_from_lake, by partition version (a rewrite
# makes a new version folder): every chunk looks up all the days validated before it, so reading each partition
# anew would make a backfill of N chunks read O(N²) files. Holds four columns per admission of the range (a few
# MB for MIMIC-IV's 431k admissions), and only the partitions the last lookup used.
_KNOWN_PARTS: dict[tuple[str, str, int], pa.Table] = {}


def _validated_columns(root: Path, table: str, first: date, before: date, schema: pa.Schema) -> pa.Table:
    """``schema``'s columns of every complete validated ``table`` partition of ``first..before - 1``, each
    partition version read once per process."""
    used: dict[tuple[str, str, int], pa.Table] = {}
    parts = [schema.empty_table()]
    for day in lake.list_days(root, VALIDATED, table, first=first, before=before):
        folder = os.path.realpath(lake.partition_dir(root, VALIDATED, table, day))
        try:
            key = (table, folder, os.stat(os.path.join(folder, lake.SUCCESS)).st_mtime_ns)
        except FileNotFoundError:  # replaced since it was listed: read as it is now, not cached
            key = None
        cached = _KNOWN_PARTS.get(key) if key else None
        if cached is None:
            cached = pa.concat_tables([schema.empty_table()] + [
                pq.read_table(path, columns=schema.names).cast(schema)
                for path in lake.list_parts(root, VALIDATED, table, day)])
        if key:
            used[key] = cached
        parts.append(cached)
    for stale in [k for k in _KNOWN_PARTS if k[0] == table and k not in used]:
        del _KNOWN_PARTS[stale]
    _KNOWN_PARTS.update(used)
    return pa.concat_tables(parts)


def _known_from_lake(settings: Settings, first: date, before: date,
                     tables: Mapping[str, pa.Table]) -> tuple[pa.Table, pa.Array]:
    """Admissions and subjects validated on ``first..before - 1`` (earlier chunks of this backfill) that the
    batch refers to: known even when those chunks are not loaded yet (the DAG validates chunks before it loads
    them)."""
    root = settings.lake_dir
    cols = ["hadm_id", "subject_id", "admittime", "dischtime"]
    referenced = pc.unique(pa.chunked_array(
        [tables[t].column("hadm_id").cast(pa.int64()) for t in ("diagnoses", "labs", "prescriptions", "notes")],
        type=pa.int64()).combine_chunks()).drop_null()
    subjects = pc.unique(tables["admissions"].column("subject_id").combine_chunks()).drop_null()
    schema = pa.schema([arrow_schema("admissions").field(c).with_nullable(True) for c in cols])
    admissions = _validated_columns(root, "admissions", first, before, schema)
    ids = _validated_columns(root, "patients", first, before, pa.schema([pa.field("subject_id", pa.int64())]))
    ids = ids.column("subject_id").combine_chunks()
    return (admissions.filter(pc.is_in(admissions.column("hadm_id"), value_set=referenced)),
            pc.unique(ids.filter(pc.is_in(ids, value_set=subjects.cast(pa.int64())))))


def validate_chunk(chunk: Chunk, *, run_id: str, settings: Settings, since: date | None = None) -> dict[str, int]:
    """The chunk's raw days as one batch through validation → validated day partitions; runs recorded per day.

    Known admissions and subjects: the warehouse's and the source's open ones (as the nightly run), plus
    those validated in the lake on the days ``since..chunk.start - 1`` (earlier chunks not loaded yet)."""
    from pipeline.tasks.phi import validation_config as phi_validation_config
    from pipeline.validate import BatchValidationError, ConservationError, validate_batch

    root = settings.lake_dir
    days = _written_days(settings, RAW, (*INPUT_TABLES, REJECTS), chunk)
    if not lake.list_parts(root, RAW, OPEN_ADMISSIONS, chunk.end):
        raise PipelineError(f"validate: chunk {chunk} was not extracted (no open admissions at {chunk.end}); "
                            "run extract first")
    tables = {name: _read_days(settings, RAW, name, days, raw_arrow_schema(name)) for name in INPUT_TABLES}
    rejects = _read_days(settings, RAW, REJECTS, days, arrow_schema("quarantine"))
    open_adm = lake.read_partition(root, RAW, OPEN_ADMISSIONS, chunk.end)
    known, known_subjects = nightly.known_context(settings, tables, open_adm)
    if since is not None and since < chunk.start:
        lake_known, lake_subjects = _known_from_lake(settings, since, chunk.start, tables)
        known = pa.concat_tables([known, lake_known.cast(known.schema)])
        known_subjects = pc.unique(pa.concat_arrays([known_subjects.cast(pa.int64()), lake_subjects]))
    try:
        outcome = validate_batch(
            tables, ds=chunk.end, run_id=run_id, pre_quarantine=rejects, known_admissions=known,
            known_subject_ids=known_subjects, trailing_volumes={}, config=phi_validation_config(settings),
            data_docs_dir=None, ds_range_start=chunk.start,
        )
    except BatchValidationError as exc:
        _keep_failed_batch(settings, chunk, exc)
        raise DataQualityError(
            f"validate chunk {chunk}: the batch failed, nothing was passed on. {exc} Quarantine and validation "
            f"results of run {run_id} are in ehr.quarantine and ehr.validation_results (ds {chunk.start} to "
            f"{chunk.end})."
        ) from exc
    except ConservationError as exc:
        raise DataQualityError(f"validate chunk {chunk}: {exc}") from exc
    nightly.check_conservation(tables, rejects, outcome)
    quarantine = _split_by_day(outcome.quarantine, chunk)
    passed = {name: _split_by_day(outcome.passed[name], chunk) for name in INPUT_TABLES}
    for name, by_day in passed.items():
        _replace_days(settings, VALIDATED, name, chunk, by_day, part_rows=settings.part_rows)
    _replace_days(settings, VALIDATED, QUARANTINE, chunk, quarantine, part_rows=1_000_000, bucket_key="")
    _replace_days(settings, VALIDATED, RESULTS, chunk, _split_by_day(outcome.results, chunk), part_rows=1_000_000,
                  bucket_key="")
    rec = RunRecorder(settings, run_id, chunk.start, "validate")
    absent = nightly.read_absent(settings, chunk.end)
    empty_quarantine = outcome.quarantine.schema.empty_table()
    for day in sorted({*days, *quarantine, *(d for by_day in passed.values() for d in by_day)}):
        for name, by_day in passed.items():
            n = by_day[day].num_rows if day in by_day else 0
            held = _count_on(quarantine.get(day, empty_quarantine), "source_table", name)
            rec.add(name, n + held, n, held, _detail(chunk, name, absent), ds=day)
    rec.write()
    return {name: c["rows_passed"] for name, c in outcome.counts.items()}


def _keep_failed_batch(settings: Settings, chunk: Chunk, error: Exception) -> None:
    """A failed chunk still leaves its evidence in the warehouse: its quarantine and validation results."""
    from pipeline.warehouse import open_warehouse

    outcome = getattr(error, "outcome", None)
    if outcome is not None:
        with open_warehouse(settings.warehouse) as wh:
            wh.replace_days({"quarantine": outcome.quarantine, "validation_results": outcome.results},
                            chunk.start, chunk.end)


def _parts(settings: Settings, table: str, day: date) -> range:
    return range(len(lake.list_parts(settings.lake_dir, VALIDATED, table, day)))


def ner_chunk(chunk: Chunk, *, run_id: str, settings: Settings) -> dict[str, int]:
    """:func:`pipeline.tasks.nightly.ner` on every validated notes part of every day of the chunk."""
    totals = {"notes": 0, "entities": 0}
    settings = settings.model_copy(update={"ner_enabled": True})
    clear_enriched_days(settings, chunk, "note_entities")
    for day in _written_days(settings, VALIDATED, ["notes"], chunk):
        for part in _parts(settings, "notes", day):
            for key, n in nightly.ner(day, part, run_id=run_id, settings=settings).items():
                totals[key] += n
    return totals


def load_chunk(chunk: Chunk, *, run_id: str, settings: Settings) -> int:
    """:func:`pipeline.tasks.nightly.load` for the whole chunk at once: every day's validated, quarantine, result
    and enriched partitions replace the chunk's days in one call of the warehouse (PostgreSQL commits a month
    at a time, each day all-or-nothing); recorded per day with rows like the nightly load. Returns input rows
    loaded."""
    from pipeline.warehouse import open_warehouse

    sources = {name: (VALIDATED, name) for name in INPUT_TABLES}
    sources |= {"quarantine": (VALIDATED, QUARANTINE), "validation_results": (VALIDATED, RESULTS)}
    days = _written_days(settings, VALIDATED, [folder for _, folder in sources.values()], chunk)
    if not days and _written_days(settings, RAW, (*INPUT_TABLES, REJECTS), chunk):
        raise PipelineError(f"load: chunk {chunk} has raw rows but nothing validated; run validate first")
    enriched = {name: _written_days(settings, ENRICHED, [name], chunk, complete_only=False)
                for name in ("note_entities", "admission_risk")}
    tables = {name: _read_days(settings, stage, folder, days, arrow_schema(name))
              for name, (stage, folder) in sources.items()}
    for name, enriched_days in enriched.items():
        # an enriched table is replaced when its stage wrote this chunk (a day without notes has no part)
        if enriched_days:
            tables[name] = _read_days(settings, ENRICHED, name, enriched_days, arrow_schema(name))
    with open_warehouse(settings.warehouse) as wh:
        wh.replace_days(tables, chunk.start, chunk.end)
    removed = {day: nightly.drop_raw_free_text(settings, day) for day in days}  # as the nightly load
    rec = RunRecorder(settings, run_id, chunk.start, "load")
    by_table = {name: _split_by_day(table, chunk) for name, table in tables.items()}
    for day in days:
        for name, by_day in by_table.items():
            n = by_day[day].num_rows if day in by_day else 0
            detail = {"backfill_chunk": str(chunk), **({"raw_partition_removed": True} if name in removed[day] else {})}
            rec.add(name, n, n, 0, detail, ds=day)
    rec.write()
    return sum(tables[name].num_rows for name in INPUT_TABLES)


def risk_and_load_chunk(chunk: Chunk, *, run_id: str, settings: Settings, risk: bool) -> dict[str, int]:
    """:func:`pipeline.tasks.nightly.risk` on every admissions part of every day, then :func:`load_chunk`.
    Risk reads history as of each day from the lake (:mod:`pipeline.tasks.asof`), which holds every day this
    backfill validated, so the chunk loads once after it is scored (and the scores do not depend on the order)."""
    totals = {"admissions": 0, "scored": 0, "loaded": 0}
    if risk:
        risk_settings = settings.model_copy(update={"risk_enabled": True})
        clear_enriched_days(settings, chunk, "admission_risk")
        for day in _written_days(settings, VALIDATED, ["admissions"], chunk):
            for part in _parts(settings, "admissions", day):
                for key, n in nightly.risk(day, part, run_id=run_id, settings=risk_settings).items():
                    totals[key] += n
    totals["loaded"] = load_chunk(chunk, run_id=run_id, settings=settings)
    return totals


def clear_enriched_days(settings: Settings, chunk: Chunk, table: str) -> None:
    for day in _written_days(settings, ENRICHED, [table], chunk, complete_only=False):
        lake.clear_partition(settings.lake_dir, ENRICHED, table, day)


# --- running a plan ------------------------------------------------------------------------------
@dataclass
class ChunkResult:
    chunk: Chunk
    stages: tuple[str, ...]
    status: str  # success | failed | nothing to do
    rows: int = 0  # input rows extracted (or validated) by this run
    error: str | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class BackfillOutcome:
    chunks: list[ChunkResult]

    @property
    def failed(self) -> list[ChunkResult]:
        return [c for c in self.chunks if c.status == "failed"]


def run_chunk(work: ChunkWork, *, settings: Settings, staged: Path | None, versions: Mapping[str, Any],
              skip: Iterable[str] = (), run_id: str | None = None, since: date | None = None,
              only: Iterable[str] | None = None, on_stage: Callable[[Chunk, str], None] | None = None) -> ChunkResult:
    """Run the chunk's planned stages (those in ``only``, when given) in order, recording each; a failing stage is
    recorded ``failed`` and ends the chunk (the error is returned, not raised, so the other chunks go on).
    ``since``: the backfill's first day (validation knows what earlier chunks validated)."""
    chunk, skip = work.chunk, set(skip)
    run_id = run_id or new_run_id(chunk.start, "backfill")
    stages = [s for s in work.stages if only is None or s in set(only)]
    result = ChunkResult(chunk, tuple(stages), "nothing to do" if not stages else "success")
    if not stages:
        return result
    records = chunk_records(settings, chunk.start, chunk.start).get(chunk.start, {})
    inputs_of = {s: r.run_id for s, r in records.items() if r.status in ("success", "skipped") and r.end == chunk.end}
    current = None
    try:
        for stage in stages:
            current = stage
            if on_stage:
                on_stage(chunk, stage)
            inputs = {s: inputs_of[s] for s in INPUTS[stage] if s in inputs_of}
            if stage == "load" and "risk" in stages:
                continue  # done with risk, day by day
            if stage == "extract":
                if staged is None:
                    raise PipelineError("extract: the source was not staged")
                counts = extract_chunk(chunk, run_id=run_id, settings=settings, staged=staged)
                result.rows = sum(counts.values())
            elif stage == "validate":
                counts = validate_chunk(chunk, run_id=run_id, settings=settings, since=since)
                result.rows = result.rows or sum(counts.values())
            elif stage == "ner":
                if "ner" in skip:
                    clear_enriched_days(settings, chunk, "note_entities")
                    _record(settings, chunk, stage, run_id, "skipped", versions, inputs, {"skipped": "--skip-ner"})
                    inputs_of[stage] = run_id
                    continue
                counts = ner_chunk(chunk, run_id=run_id, settings=settings)
            elif stage == "risk":
                with_risk = "risk" not in skip
                if not with_risk:
                    clear_enriched_days(settings, chunk, "admission_risk")
                counts = risk_and_load_chunk(chunk, run_id=run_id, settings=settings, risk=with_risk)
                _record(settings, chunk, "risk", run_id, "success" if with_risk else "skipped", versions, inputs,
                        {"counts": {k: v for k, v in counts.items() if k != "loaded"}}
                        | ({} if with_risk else {"skipped": "--skip-risk"}))
                inputs_of["risk"] = run_id
                current = stage = "load"
                inputs = {s: inputs_of[s] for s in INPUTS["load"] if s in inputs_of}
                counts = {"loaded": counts["loaded"]}
            else:  # load alone (risk not redone)
                counts = risk_and_load_chunk(chunk, run_id=run_id, settings=settings, risk=False)
            result.counts[stage] = counts
            _record(settings, chunk, stage, run_id, "success", versions, inputs, {"counts": counts})
            inputs_of[stage] = run_id
            release_memory()  # what the stage built is garbage now: the next stage starts from the same floor
    except Exception as exc:  # recorded and returned: the next chunk goes on
        message = f"{type(exc).__name__}: {exc}"[:2000]
        log.error("backfill chunk failed", extra={"chunk": str(chunk), "stage": current})
        _record(settings, chunk, current or stages[0], run_id, "failed", versions, {}, {"error": message})
        result.status, result.error = "failed", f"{current}: {message}"
    return result


def run_backfill(start: date, end: date, *, settings: Settings | None = None, chunk: str | None = None,
                 reprocess: str = "missing", skip_ner: bool = False, skip_risk: bool = False, dry_run: bool = False,
                 on_plan: Callable[[list[ChunkWork]], None] | None = None,
                 on_stage: Callable[[Chunk, str], None] | None = None,
                 on_chunk: Callable[[ChunkResult], None] | None = None) -> tuple[list[ChunkWork], BackfillOutcome]:
    """Plan the range and run it chunk by chunk (stage the source first when a chunk extracts).

    ``dry_run`` plans only. Returns the plan and what happened; failed chunks are in ``outcome.failed``.
    """
    from urllib.parse import parse_qsl

    from pipeline.warehouse import pinned_warehouse

    settings = settings or load_settings()
    fix_mmap_threshold()
    # one warehouse connection for planning and one per chunk, their DuckDB memory bounded (a connection per step
    # checkpointed the file at every close, in memory that grew with the warehouse; one for the whole run kept
    # a buffer pool that grew with it up to the limit)
    pin = functools.partial(pinned_warehouse, settings.warehouse, dict(parse_qsl(settings.backfill_duckdb)))
    spec = chunk or settings.backfill_chunk
    skip = tuple(s for s, on in (("ner", skip_ner), ("risk", skip_risk)) if on)
    versions = current_versions(settings)
    raw_kept = settings.raw_retention == "keep"

    def plan(chunks: list[Chunk]) -> list[ChunkWork]:
        with pin():
            records = chunk_records(settings, chunks[0].start, chunks[-1].start) if chunks else {}
        return plan_work(chunks, records, versions, reprocess, skip, raw_kept=raw_kept)

    calendar = plan_chunks(start, end, spec)  # a bad range or chunk size fails here, before anything is read
    if not dry_run:  # a missing model stops the backfill before the source is read
        _check_models(settings, plan(calendar), skip)
    # the one pass over the source (kept and reused while the source is unchanged); a dry run uses a copy
    # already there and stages nothing (without one it plans calendar chunks)
    staged = stage_source(settings) if not dry_run else _complete_copy(settings)
    release_memory()
    work = plan(calendar if staged is None else plan_chunks(
        start, end, spec, rows_per_day=_rows_per_day(staged, settings), max_rows=settings.backfill_chunk_rows))
    if on_plan:
        on_plan(work)
    if dry_run:
        return work, BackfillOutcome([])
    outcome = BackfillOutcome([])
    for item in work:
        with pin():
            result = run_chunk(item, settings=settings, staged=staged, versions=versions, skip=skip, since=start,
                               on_stage=on_stage)
        outcome.chunks.append(result)
        if on_chunk:
            on_chunk(result)
    return work, outcome


_ROWS_PER_DAY: dict[Path, dict[date, int]] = {}


def _complete_copy(settings: Settings) -> Path | None:
    from pipeline.sources.stream import STAGING_ORDER, staged_tables

    try:
        folder = staged_dir(settings)
    except BackfillError:  # no source folder: nothing staged to plan from
        return None
    return folder if set(STAGING_ORDER) <= set(staged_tables(folder)) else None


def _rows_per_day(staged: Path, settings: Settings) -> dict[date, int]:
    """The staged copy's rows per day (computed once per copy in this process)."""
    from pipeline.sources.stream import rows_per_day

    if staged not in _ROWS_PER_DAY:
        _ROWS_PER_DAY.clear()
        _ROWS_PER_DAY[staged] = rows_per_day(staged, settings.source_day_shift)
    return _ROWS_PER_DAY[staged]


def _check_models(settings: Settings, work: Sequence[ChunkWork], skip: Iterable[str]) -> None:
    """A stage that needs a model that is not there stops the backfill before any chunk (every chunk would fail)."""
    needs = {s for w in work for s in w.stages} - set(skip)
    if "ner" in needs and not nightly.NER.model_ready(settings.ner_model_dir):
        raise BackfillError(f"no NER model at {settings.ner_model_dir}: run `ehr-pipeline train-ner`, set "
                            "EHR_NER_MODEL_PATH, or seed without NER (--skip-ner)")
    if "risk" in needs and not nightly.RISK.model_ready(settings.risk_model_dir):
        raise BackfillError(f"no risk model at {settings.risk_model_dir}: seed with --skip-risk, then run "
                            "`ehr-pipeline train-risk` and `backfill` again (it then scores history)")


# --- the ehr_history DAG ---------------------------------------------------------------------------
# the DAG's mapped task groups: extract runs in parallel, validate in chunk order (it learns what earlier
# chunks validated), NER in parallel on the GPU queue, risk and load in chunk order (risk reads loaded history)
DAG_GROUPS: dict[str, tuple[str, ...]] = {"extract": ("extract",), "validate": ("validate",), "ner": ("ner",),
                                          "risk_load": ("risk", "load")}


def plan_for_dag(start: date, end: date, *, chunk: str | None = None, reprocess: str = "missing",
                 skip_ner: bool = False, skip_risk: bool = False, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The ``plan`` task: the chunks with work (JSON for the mapped tasks); stages the source once when needed."""
    settings = settings or load_settings()
    stage_source(settings)  # first, so the plan leaves out the chunks the source has no rows for
    work, _ = run_backfill(start, end, settings=settings, chunk=chunk, reprocess=reprocess, skip_ner=skip_ner,
                           skip_risk=skip_risk, dry_run=True)
    skip = tuple(s for s, on in (("ner", skip_ner), ("risk", skip_risk)) if on)
    _check_models(settings, work, skip)
    return [{"start": w.chunk.start.isoformat(), "end": w.chunk.end.isoformat(), "stages": list(w.stages),
             "skip": list(skip), "since": start.isoformat()} for w in work if w.stages]


def run_dag_group(item: Mapping[str, Any], group: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """One mapped task of the ``ehr_history`` DAG: the stages of ``group`` for one planned chunk.

    Returns ``item`` for the next group; a failure is recorded and returned in ``item["failed"]`` instead of
    raised, so the other chunks' later groups still run (a mapped task expands only once every upstream map
    index is done) and this chunk's are no-ops; the DAG's last task fails listing the failed chunks.
    """
    if item.get("failed"):
        return dict(item)
    settings = settings or load_settings()
    chunk = Chunk(date.fromisoformat(item["start"]), date.fromisoformat(item["end"]))
    work = ChunkWork(chunk, tuple(item["stages"]), {})
    staged = staged_dir(settings) if "extract" in DAG_GROUPS[group] and "extract" in work.stages else None
    result = run_chunk(work, settings=settings, staged=staged, versions=current_versions(settings),
                       skip=item.get("skip", ()), since=date.fromisoformat(item["since"]), only=DAG_GROUPS[group])
    if result.status == "failed":
        log.error("backfill chunk failed", extra={"chunk": str(chunk), "group": group})
        return {**item, "failed": result.error}
    return dict(item)


def failed_chunks(start: date, end: date, *, settings: Settings | None = None) -> list[str]:
    """Chunks of ``start..end`` with a failed stage record (the DAG's last task fails listing them)."""
    records = chunk_records(settings or load_settings(), start, end)
    return sorted(f"{ds.isoformat()} {stage}: {rec.detail.get('error', '')}"[:300]
                  for ds, stages in records.items() for stage, rec in stages.items() if rec.status == "failed")
