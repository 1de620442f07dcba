"""One pass over the source for a backfill: every source table is read once, as a stream, into a Parquet
*staging copy*; each chunk of the backfill then extracts from that copy instead of the source.

Why: a backfill of years, extracted a month (or a day) at a time straight from the source, would parse and
decompress every CSV once per chunk. :func:`stage_table` reads a source table batch by batch (the reader's
own streaming, e.g. ``pyarrow.csv.open_csv``) and writes the text rows to
``<dir>/<table>/data/staged_month=<YYYY-MM>/…parquet`` (pyarrow's dataset writer, a bounded number of open files), so
memory stays at a few batches whatever the file's size. Tables that date their rows themselves (labs and
notes, by ``charttime`` then ``storetime``, :func:`pipeline.sources.base._own_day`) are partitioned by the
month of that run day; a row with no readable own day goes to ``staged_month=none``. Diagnoses and prescriptions
are dated through their admission: they are staged after admissions and notes, and partitioned by the month of
the day :func:`admission_days` gives their admission (the same dating as the extraction's). Admissions and
patients are one unpartitioned dataset each (read whole by every chunk: they decide the days).

:class:`StagedReader` is a :class:`~pipeline.sources.base.SourceReader` over the copy for one range of run
days: labs, notes, diagnoses and prescriptions come only from the months of the range (plus ``none``),
filtered to the range's days or no day, which is exactly the set of rows
:func:`~pipeline.sources.base.extract_range` can keep. Notes outside the range are still returned as stubs (``hadm_id`` and the two
times, every other column null), because a note dated outside the range can be the witness that dates an
admission whose discharge time is missing. So ``extract_range(StagedReader(copy, a, b), a, b)`` gives the
same result as ``extract_range(source, a, b)``.

Atomic: a table is written to a temporary folder and renamed into place after its ``_SUCCESS`` marker, so a
killed staging leaves no table that :class:`StagedReader` would read (it refuses a table without the marker).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline.contracts import INPUT_TABLES
from pipeline.sources.base import (
    SourceError,
    SourceReader,
    _Admissions,
    _count,
    _date_admissions,
    _date_dependants,
    _int,
    _own_day,
    _radiology,
    _scan_admissions,
    _Tally,
)
from pipeline.sources.files import MalformedRow

SUCCESS = "_SUCCESS"
MONTH, DAY = "staged_month", "_day"  # a folder name must not start with "_" or "." (the dataset reader skips those)
NO_MONTH = "none"
# tables whose rows carry their own day, and the columns that decide it (first readable wins)
OWN_DAY_COLUMNS: dict[str, tuple[str, ...]] = {"labs": ("charttime", "storetime"), "notes": ("charttime", "storetime")}
# tables dated through their admission: staged after admissions and notes, partitioned by that day
ADMISSION_DATED = ("diagnoses", "procedures", "prescriptions", "icu_stays")
# when their admission is not in the source at all: the column that dates them (as the extraction's)
ADMISSION_FALLBACK = {"prescriptions": "starttime", "icu_stays": "intime"}
# the order tables are staged in (admissions and notes date the others)
STAGING_ORDER = ("admissions", "notes", "labs", "patients", "diagnoses", "procedures", "prescriptions", "icu_stays")
# what a note outside the range is still needed for: dating its admission (radiology reports never do)
WITNESS_COLUMNS = ("hadm_id", "charttime", "storetime", "note_type")
READER_COLUMNS = {"_bad_encoding": pa.bool_(), "_reader_rule": pa.string(), "_reader_detail": pa.string()}
MAX_OPEN_FILES = 64
# staged rows held before they are written: a month's are written once they make a row group (GROUP_ROWS rows or
# GROUP_BYTES), every month's once all together pass PENDING_BYTES (note texts are wide: bytes, not rows, bound it)
GROUP_ROWS, GROUP_BYTES, PENDING_BYTES, FILE_ROWS = 65_536, 16 << 20, 96 << 20, 2_000_000


class StagingIncompleteError(SourceError):
    """A staged table is missing or was not completely written (a killed staging): stage it again."""


def _normalise(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = {}
    for field in schema:
        if field.name in batch.column_names:
            columns[field.name] = batch.column(field.name).cast(field.type)
        else:
            columns[field.name] = pa.nulls(batch.num_rows, field.type)
    return pa.table(columns, schema=schema)


def _text_schema(first: pa.Table) -> pa.Schema:
    fields = [pa.field(name, pa.string()) for name in first.column_names if name not in READER_COLUMNS]
    fields += [pa.field(name, typ) for name, typ in READER_COLUMNS.items()]
    return pa.schema(fields)


def admission_days(staged_dir: Path, day_shift: int = 0) -> _Admissions:
    """Every staged admission with its final day, as :func:`~pipeline.sources.base.extract_range` dates them
    (discharge, death, else the latest readable time of its notes; the undatable day), from the staged
    admissions and notes (both must be staged)."""
    reader = _WholeReader(staged_dir)
    far = date(1, 1, 1)
    adm = _scan_admissions(reader, far, far, day_shift)
    undated = pc.and_(pc.is_null(adm.keys.column("own_day")), pc.is_valid(adm.keys.column("hadm_id")))
    waiting = pc.unique(adm.keys.column("hadm_id").filter(undated).combine_chunks())
    parts = [pa.table({"hadm_id": pa.array([], pa.int64()), "day": pa.array([], pa.date32())})]
    if len(waiting):
        for raw in reader.batches("notes", columns=list(WITNESS_COLUMNS)):
            own_day = _own_day(raw, OWN_DAY_COLUMNS["notes"], day_shift)
            hadm = _int(raw, "hadm_id")
            witness = pc.and_(pc.fill_null(pc.is_in(hadm, value_set=waiting), False), pc.is_valid(own_day))
            witness = pc.and_(witness, pc.invert(_radiology(raw)))
            if _count(witness):
                parts.append(pa.table({"hadm_id": hadm.filter(witness), "day": own_day.filter(witness)}))
    witnesses = pa.concat_tables(parts).group_by("hadm_id").aggregate([("day", "max")]).rename_columns(
        ["hadm_id", "day"])
    _date_admissions(adm, witnesses)
    return adm


def rows_per_day(staged_dir: Path, day_shift: int = 0) -> dict[date, int]:
    """Rows of the staged copy per run day: the tables dated by their own or their admission's day (their
    ``_day`` column, read alone and batch by batch, so memory stays flat) and admissions and their patients
    on each admission's final day (the undatable day included). Rows with no day (``staged_month=none``) are
    read by every chunk and counted by none.

    A backfill plans its chunks from these counts: a chunk without rows is not planned (MIMIC's dates, shifted
    into 2110-2210, leave most months of a whole-history range empty) and a chunk with more rows than its
    budget is cut at a day boundary, so a chunk's memory does not grow with the source."""
    counts: dict[date, int] = {}

    def add(days: pa.Array) -> None:
        days = pc.drop_null(days)
        if len(days):
            for item in pc.value_counts(days).to_pylist():
                counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]

    for table in STAGING_ORDER:
        dataset, meta = _open(staged_dir, table)
        if meta["partitioned"]:
            for batch in dataset.to_batches(columns=[DAY], filter=pads.field(MONTH) != NO_MONTH,
                                            batch_size=1 << 20):
                add(batch.column(0))
    adm = admission_days(staged_dir, day_shift)
    if adm.day is not None:
        days = adm.day.combine_chunks() if isinstance(adm.day, pa.ChunkedArray) else adm.day
        add(pa.concat_arrays([days, days]))  # an admission and its patient's row
    if adm.undatable_day is not None:  # where rows no day can be found for are reported: planned
        counts[adm.undatable_day] = counts.get(adm.undatable_day, 0) + 1
    return counts


def stage_table(reader: SourceReader, table: str, out_dir: Path, *, day_shift: int = 0,
                admissions: _Admissions | None = None) -> int:
    """Read ``table`` once from ``reader`` into ``out_dir/<table>`` (replacing it atomically); returns its rows.

    Labs and notes are partitioned by their own day; diagnoses and prescriptions by their admission's day
    (``admissions``: :func:`admission_days`; without it they are staged unpartitioned)."""
    final = out_dir / table
    tmp = out_dir / f".tmp-{table}-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    own = OWN_DAY_COLUMNS.get(table)
    if own:
        def day_of(raw: pa.Table) -> pa.Array:
            return _own_day(raw, own, day_shift)
    elif table in ADMISSION_DATED and admissions is not None:
        def day_of(raw: pa.Table) -> pa.Array:
            # rows no witness dates go to "none": every chunk reads them, so every extraction counts them
            day, undatable = _date_dependants(raw, None, admissions, day_shift, _Tally(), ADMISSION_FALLBACK.get(table))
            return pc.if_else(undatable, pa.scalar(None, pa.date32()), day)
    else:
        day_of = None
    rows = 0
    try:
        batches = iter(reader.batches(table))
        first = next(batches)
        text_schema = _text_schema(first)
        schema = text_schema
        if day_of:
            schema = schema.append(pa.field(DAY, pa.date32())).append(pa.field(MONTH, pa.string()))

        with _PartitionedWriter(tmp / "data", schema.remove(schema.get_field_index(MONTH)) if day_of else schema,
                                by_month=day_of is not None) as writer:
            for raw in _chain(first, batches):
                rows += raw.num_rows
                out = _normalise(raw, text_schema)
                if day_of:
                    day = day_of(raw)
                    month = pc.fill_null(pc.strftime(day.cast(pa.timestamp("s")), "%Y-%m"), NO_MONTH) \
                        if len(day) else pa.array([], pa.string())
                    out = out.append_column(DAY, day).append_column(MONTH, month)
                writer.write(out)
        if rows == 0:  # an empty (or absent optional) table: one empty file keeps its columns readable
            file_schema = schema.remove(schema.get_field_index(MONTH)) if day_of else schema
            folder = tmp / "data" / (f"{MONTH}={NO_MONTH}" if day_of else "")
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(file_schema.empty_table(), folder / "part-0.parquet")
        # what the reader found besides rows travels with the copy: an optional table's absence, and rows set
        # aside for a wrong field count (where they are, never what they hold), so a chunk counts them as the
        # source's extraction would
        absent = getattr(reader, "absent", None)
        malformed = getattr(reader, "malformed_rows", None)
        meta = {"table": table, "rows": rows, "partitioned": day_of is not None, "day_shift": day_shift,
                "absent": absent(table) if absent else None,
                "malformed": [asdict(m) for m in malformed(table)] if malformed else []}
        (tmp / SUCCESS).write_text(json.dumps(meta), encoding="utf-8")
        if final.exists():
            old = out_dir / f".old-{table}-{uuid.uuid4().hex}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows


class _PartitionedWriter:
    """Writes a staged table as Parquet under ``folder``, by month (``staged_month=<YYYY-MM>/``, the hive layout
    the dataset reader expects) or as one series of files, *in the caller's thread*.

    Why not ``pyarrow.dataset.write_dataset``: it writes in background threads and bounds what it holds only at
    tens of millions of queued rows, so its memory followed the table: staging the labs of a generated 40,000-patient
    year (5.7 M rows) peaked at 2.2 GB with it, at about 1 GB with this writer (10,000 patients: about 0.6 GB). Here
    a month's rows are written once they make a row group and all pending rows once they pass ``PENDING_BYTES``; at most ``MAX_OPEN_FILES`` files are
    open (the least recently used is closed, and its month continues in a new file), a file ends at
    ``FILE_ROWS`` rows."""

    def __init__(self, folder: Path, schema: pa.Schema, *, by_month: bool) -> None:
        self.folder, self.schema, self.by_month = folder, schema, by_month
        self.pending: dict[str, list[pa.Table]] = {}
        self.pending_size: dict[str, tuple[int, int]] = {}  # month → rows, bytes
        self.open: dict[str, tuple[pq.ParquetWriter, int]] = {}  # month → writer, rows written (LRU order)
        self.files: dict[str, int] = {}  # month → files started
        # bytes of the batches taken in since everything was last written: a month's rows are slices of their
        # batch, which stays in memory until its last slice is written, so the batch's size is what is held
        self.held = 0

    def __enter__(self) -> _PartitionedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                for month in list(self.pending):
                    self._flush(month)
        finally:
            for writer, _ in self.open.values():
                writer.close()
            self.open.clear()

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if not self.by_month:
            self._add("", table)
        else:
            # one stable sort, then a slice per month (a MIMIC batch spans hundreds of shifted months)
            table = table.take(pc.sort_indices(table.column(MONTH)))
            start = 0
            for item in pc.value_counts(table.column(MONTH)).to_pylist():
                self._add(item["values"], table.slice(start, item["counts"]).drop_columns([MONTH]))
                start += item["counts"]
        self.held += table.nbytes
        if self.held >= PENDING_BYTES:
            for month in list(self.pending):
                self._flush(month)
            self.held = 0

    def _add(self, month: str, rows: pa.Table) -> None:
        self.pending.setdefault(month, []).append(rows)
        n, size = self.pending_size.get(month, (0, 0))
        n, size = self.pending_size[month] = n + rows.num_rows, size + rows.nbytes
        if n >= GROUP_ROWS or size >= GROUP_BYTES:
            self._flush(month)

    def _flush(self, month: str) -> None:
        rows = pa.concat_tables(self.pending.pop(month)).cast(self.schema)
        self.pending_size.pop(month)
        start = 0
        while start < rows.num_rows:
            writer, written = self._writer(month)
            take = min(rows.num_rows - start, FILE_ROWS - written)
            writer.write_table(rows.slice(start, take), row_group_size=GROUP_ROWS * 4)
            self.open[month] = (writer, written + take)
            start += take

    def _writer(self, month: str) -> tuple[pq.ParquetWriter, int]:
        if month in self.open:
            writer, written = self.open.pop(month)
            if written < FILE_ROWS:
                self.open[month] = (writer, written)  # most recently used last
                return writer, written
            writer.close()
        while len(self.open) >= MAX_OPEN_FILES:
            oldest = next(iter(self.open))
            self.open.pop(oldest)[0].close()
        n = self.files[month] = self.files.get(month, -1) + 1
        folder = self.folder / f"{MONTH}={month}" if self.by_month else self.folder
        folder.mkdir(parents=True, exist_ok=True)
        writer = pq.ParquetWriter(folder / f"part-{n}.parquet", self.schema, compression="zstd")
        self.open[month] = (writer, 0)
        return writer, 0


def _chain(first: pa.Table, rest: Iterator[pa.Table]) -> Iterator[pa.Table]:
    yield first
    yield from rest


def staged_tables(out_dir: Path) -> dict[str, int]:
    """The tables completely staged under ``out_dir`` and their row counts."""
    done = {}
    for table in INPUT_TABLES:
        marker = out_dir / table / SUCCESS
        if marker.is_file():
            done[table] = int(json.loads(marker.read_text(encoding="utf-8"))["rows"])
    return done


def clean_leftovers(out_dir: Path) -> None:
    """Remove the temporary folders a killed staging left behind (they are never read)."""
    if out_dir.is_dir():
        for leftover in list(out_dir.glob(".tmp-*")) + list(out_dir.glob(".old-*")):
            shutil.rmtree(leftover, ignore_errors=True)


def _months(start: date, end: date) -> list[str]:
    months, current = [], start.replace(day=1)
    while current <= end:
        months.append(current.strftime("%Y-%m"))
        current = (current + timedelta(days=32)).replace(day=1)
    return months


class _WholeReader:
    """Every row of a staged table (text columns), for dating admissions at staging time."""

    def __init__(self, staged_dir: Path) -> None:
        self.dir = staged_dir

    def batches(self, table: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        dataset, _ = _open(self.dir, table)
        names = columns or [f.name for f in dataset.schema if f.name not in (MONTH, DAY)]
        yielded = False
        for batch in dataset.to_batches(columns=names, batch_size=65_536):
            yielded = True
            yield pa.Table.from_batches([batch])
        if not yielded:
            yield dataset.schema.empty_table().select(names)


def _open(staged_dir: Path, table: str) -> tuple[pads.Dataset, dict]:
    folder = staged_dir / table
    marker = folder / SUCCESS
    if not marker.is_file():
        raise StagingIncompleteError(f"staged table {table} at {folder} is missing or incomplete: stage it again")
    meta = json.loads(marker.read_text(encoding="utf-8"))
    partitioning = pads.partitioning(pa.schema([(MONTH, pa.string())]), flavor="hive") if meta["partitioned"] \
        else None
    return pads.dataset(folder / "data", format="parquet", partitioning=partitioning), meta


class StagedReader:
    """The staged copy as a source reader for the run days ``start..end`` (see the module docstring)."""

    layout = "staged"

    def __init__(self, staged_dir: Path, start: date, end: date, *, batch_rows: int = 65_536) -> None:
        self.dir = Path(staged_dir)
        self.start, self.end = start, end
        self.batch_rows = batch_rows

    def _dataset(self, table: str) -> tuple[pads.Dataset, dict]:
        return _open(self.dir, table)

    def absent(self, table: str) -> str | None:
        """Why the source lacked this optional table when it was staged (None: it was there)."""
        return _open(self.dir, table)[1].get("absent")

    def malformed_rows(self, table: str) -> list[MalformedRow]:
        """The rows the source's reader set aside for a wrong field count when the table was staged."""
        return [MalformedRow(**m) for m in _open(self.dir, table)[1].get("malformed", [])]

    def rows_read(self, table: str) -> int:
        return int(_open(self.dir, table)[1]["rows"])

    def batches(self, table: str) -> Iterator[pa.Table]:
        dataset, meta = self._dataset(table)
        text = [f.name for f in dataset.schema if f.name not in (MONTH, DAY)]
        yielded = False
        if not meta["partitioned"]:
            scanned = dataset.to_batches(columns=text, batch_size=self.batch_rows)
        else:
            month, day = pads.field(MONTH), pads.field(DAY)
            lo, hi = pa.scalar(self.start, pa.date32()), pa.scalar(self.end, pa.date32())
            in_range = month.isin(_months(self.start, self.end)) & (day >= lo) & (day <= hi)
            wanted = (month == NO_MONTH) | in_range
            scanned = dataset.to_batches(columns=text, filter=wanted, batch_size=self.batch_rows)
            if table == "notes":
                scanned = _chain_batches(scanned, self._witness_stubs(dataset, text, in_range))
        for batch in scanned:
            yielded = True
            yield pa.Table.from_batches([batch])
        if not yielded:
            yield dataset.schema.empty_table().select(text)

    def _witness_stubs(self, dataset: pads.Dataset, text: list[str], in_range: pads.Expression) -> Iterator[pa.RecordBatch]:
        """Notes dated outside the range, reduced to what can date an admission (never kept by extraction)."""
        outside = (pads.field(MONTH) != NO_MONTH) & ~in_range & pads.field("hadm_id").is_valid()
        schema = pa.schema([dataset.schema.field(name) for name in text])
        for batch in dataset.to_batches(columns=list(WITNESS_COLUMNS), filter=outside, batch_size=self.batch_rows):
            n = batch.num_rows
            yield pa.RecordBatch.from_arrays(
                [batch.column(name) if name in WITNESS_COLUMNS else
                 (pa.array([False] * n) if name == "_bad_encoding" else pa.nulls(n, schema.field(name).type))
                 for name in text],
                schema=schema,
            )


def _chain_batches(*iterators: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for it in iterators:
        yield from it
