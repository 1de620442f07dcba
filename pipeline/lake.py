"""The Parquet lake: ``<root>/<stage>/<table>/ds=<ds>/part-<n>.parquet``.

Replacing a partition is one atomic step, so a killed task never leaves a partial, mixed or missing
partition visible: ``ds=<ds>`` is a symbolic link to a version folder ``.v/ds=<ds>/<token>``; a write
fills a new version folder, writes ``_SUCCESS`` last, and swaps the link with ``os.replace`` (atomic on
POSIX). The previous version is deleted only after the swap; a version left behind by a crash is
never linked and is removed by the next write of that partition (each partition has its own folder of
versions, so a write looks at its own few entries, never at the thousands of days beside it).

Readers tell the states apart instead of guessing: a partition that was never written raises
:class:`PartitionNotFoundError` (unless the caller says ``missing_ok``), a partition written empty has a
marker and reads as zero rows, and a folder with neither ``_SUCCESS`` nor ``_PARTWISE`` (interrupted or
written by an older version) raises :class:`PartitionIncompleteError`. Partitions filled part by part
by mapped tasks (:func:`write_parts`) carry ``_PARTWISE``: each part file is itself written atomically.

Rows are bucketed by ``subject_id`` so that one patient's rows stay in one part.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

Stage = str  # "raw" | "validated" | "enriched" | "quarantine" | ...

SUCCESS = "_SUCCESS"  # written last into a version folder by write_partition
PARTWISE = "_PARTWISE"  # a partition assembled by write_parts (one atomic file per mapped task)
VERSIONS = ".v"  # hidden: readers that glob ``ds=*`` or skip ``.``/``_`` folders never see versions


class PartitionNotFoundError(FileNotFoundError):
    """The partition was never written (the stage that writes it has not run for that day)."""


class PartitionIncompleteError(RuntimeError):
    """A partition folder exists but is not a complete write (no marker, or a listed part is missing)."""


def partition_dir(root: Path, stage: Stage, table: str, ds: date) -> Path:
    return root / stage / table / f"ds={ds.isoformat()}"


def bucket_parts(table: pa.Table, part_rows: int, key: str = "subject_id") -> list[pa.Table]:
    """Split ``table`` into parts of about ``part_rows`` rows without splitting a ``key`` across parts.

    >>> t = pa.table({"subject_id": [3, 1, 1, 2, 3], "v": [1, 2, 3, 4, 5]})
    >>> [p.column("subject_id").to_pylist() for p in bucket_parts(t, 2)]
    [[1, 1], [2, 3, 3]]
    """
    if table.num_rows == 0:
        return [table]
    if key not in table.column_names:
        return [table.slice(i, part_rows) for i in range(0, table.num_rows, part_rows)]
    table = table.sort_by([(key, "ascending")])
    keys = table.column(key).to_numpy(zero_copy_only=False)
    # Start of each run of equal keys; a part may only begin at such a start.
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    part_of_run = starts // part_rows
    part_of_row = np.repeat(part_of_run, np.diff(np.r_[starts, len(keys)]))
    boundaries = np.flatnonzero(np.r_[True, part_of_row[1:] != part_of_row[:-1]])
    ends = np.r_[boundaries[1:], len(keys)]
    return [table.slice(int(s), int(e - s)) for s, e in zip(boundaries, ends, strict=True)]


def write_partition(
    root: Path,
    stage: Stage,
    table_name: str,
    ds: date,
    table: pa.Table,
    *,
    part_rows: int = 5000,
    bucket_key: str = "subject_id",
) -> list[Path]:
    """Replace the partition atomically with ``table`` split into parts; returns the part paths."""
    parts = bucket_parts(table, part_rows, bucket_key)
    final = partition_dir(root, stage, table_name, ds)
    version = _new_version(final)
    try:
        names = []
        for n, part in enumerate(parts):
            pq.write_table(part, version / f"part-{n}.parquet", compression="zstd")
            names.append(f"part-{n}.parquet")
        _write_marker(version / SUCCESS, {"parts": names, "rows": table.num_rows})
        _point_to(final, version)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    return [final / name for name in names]


def write_parts(root: Path, stage: Stage, table_name: str, ds: date, part: int, table: pa.Table) -> Path:
    """Write one part file of a partition (used by per-part mapped tasks), atomically by rename.

    The first task to arrive creates the partition (marked ``_PARTWISE``); creating the link with
    ``os.symlink`` fails if another task got there first, so parallel tasks share one partition.
    """
    return write_part_batches(root, stage, table_name, ds, part, table.to_batches(), table.schema)


def write_part_batches(
    root: Path, stage: Stage, table_name: str, ds: date, part: int, batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
) -> Path:
    """Like :func:`write_parts`, streaming: each batch is written as it comes, so memory stays at one batch."""
    final_dir = partition_dir(root, stage, table_name, ds)
    if not os.path.lexists(final_dir):
        version = _new_version(final_dir)
        _write_marker(version / PARTWISE, {})
        try:
            os.symlink(_link_target(version), final_dir)
        except FileExistsError:
            shutil.rmtree(version, ignore_errors=True)
    final = final_dir / f"part-{part}.parquet"
    tmp = final_dir / f".tmp-part-{part}-{uuid.uuid4().hex}.parquet"
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in batches:
                if batch.num_rows:
                    writer.write_batch(batch)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def clear_partition(root: Path, stage: Stage, table_name: str, ds: date) -> None:
    """Remove the partition (it then reads as never written)."""
    final = partition_dir(root, stage, table_name, ds)
    if final.is_symlink():
        target = final.resolve()
        final.unlink()  # one atomic step: readers see the whole old partition or none
        shutil.rmtree(target, ignore_errors=True)
    else:
        shutil.rmtree(final, ignore_errors=True)
    shutil.rmtree(_versions(final), ignore_errors=True)  # and versions a killed writer left


def _versions(final: Path) -> Path:
    """The folder of the partition's versions (and of its link being swapped in)."""
    return final.parent / VERSIONS / final.name


def _new_version(final: Path) -> Path:
    version = _versions(final) / uuid.uuid4().hex
    version.mkdir(parents=True)
    return version


def _link_target(version: Path) -> str:
    # relative, so a lake copied or mounted elsewhere keeps working
    return f"{VERSIONS}/{version.parent.name}/{version.name}"


def _write_marker(path: Path, content: dict) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(content), encoding="utf-8")
    os.replace(tmp, path)


def _point_to(final: Path, version: Path) -> None:
    """Make ``final`` show ``version`` in one atomic step, then drop the versions it no longer needs."""
    versions = _versions(final)
    previous = os.path.realpath(final) if final.is_symlink() else None
    link = versions / f".tmp-link-{uuid.uuid4().hex}"
    os.symlink(_link_target(version), link)  # relative to the folder of ``final``, where it is moved
    try:
        if final.is_dir() and not final.is_symlink():
            # A plain folder from a lake written before versioned partitions: it cannot be swapped
            # atomically, so it is moved aside first (a crash here leaves the partition missing, which
            # readers report as never written, never as empty).
            os.replace(final, versions / f"legacy-{uuid.uuid4().hex}")
        os.replace(link, final)
    except BaseException:
        link.unlink(missing_ok=True)
        raise
    if previous is not None and Path(previous).parent != versions:  # a version of the older flat layout
        shutil.rmtree(previous, ignore_errors=True)
    for stale in versions.iterdir():  # earlier versions, and the links of a killed writer
        if stale.name.startswith(".tmp-link-"):
            stale.unlink(missing_ok=True)
        elif stale.name != version.name:
            shutil.rmtree(stale, ignore_errors=True)


def _part_number(path: Path) -> int:
    return int(path.stem.split("-")[1])


def _state(folder: Path) -> str:
    """``absent``, ``complete`` (``_SUCCESS``), ``partwise`` (``_PARTWISE``) or ``unmarked``."""
    if not folder.is_dir():
        return "absent"
    if (folder / SUCCESS).is_file():
        return "complete"
    if (folder / PARTWISE).is_file():
        return "partwise"
    return "unmarked"


def list_parts(root: Path, stage: Stage, table_name: str, ds: date) -> list[Path]:
    """The part files of a partition (empty when it was never written)."""
    folder = partition_dir(root, stage, table_name, ds)
    state = _state(folder)
    if state == "absent":
        return []
    if state == "complete":
        names = json.loads((folder / SUCCESS).read_text(encoding="utf-8"))["parts"]
        return [folder / name for name in names]
    return sorted(folder.glob("part-*.parquet"), key=_part_number)


def read_partition(
    root: Path,
    stage: Stage,
    table_name: str,
    ds: date,
    schema: pa.Schema | None = None,
    *,
    missing_ok: bool = False,
) -> pa.Table:
    """All parts of a partition as one table.

    A partition that was never written raises :class:`PartitionNotFoundError`, unless ``missing_ok``
    (then an empty table with ``schema``); one written empty reads as zero rows.
    """
    folder = partition_dir(root, stage, table_name, ds)
    state = _state(folder)
    if state == "absent":
        if missing_ok and schema is not None:
            return schema.empty_table()
        raise PartitionNotFoundError(
            f"partition {folder} was never written: run the stage that writes {stage}/{table_name} for {ds}"
        )
    if state == "unmarked":
        raise PartitionIncompleteError(
            f"partition {folder} has no {SUCCESS} marker (an interrupted write or an older lake): "
            f"rerun the stage that writes {stage}/{table_name} for {ds}"
        )
    parts = list_parts(root, stage, table_name, ds)
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise PartitionIncompleteError(f"partition {folder}: part file(s) {', '.join(missing)} listed but missing")
    if not parts:  # a _PARTWISE partition no mapped task has written to yet
        if schema is None:
            raise PartitionIncompleteError(f"partition {folder} has no part files yet")
        return schema.empty_table()
    tables = [pq.read_table(p, schema=schema) for p in parts]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def iter_record_batches(path: Path, batch_size: int = 1024) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size)


def filter_in(table: pa.Table, column: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.filter(pc.is_in(table.column(column), value_set=pc.unique(values)))


def split_by_day(data: pa.Table) -> dict[date, pa.Table]:
    """The rows of each day of ``data`` (its ``ds`` column) that has any, in day order: zero-copy slices after
    one sort, so splitting a long range costs one pass whatever the number of days."""
    if not data.num_rows:
        return {}
    ordered = data.take(pc.sort_indices(data.column("ds")))
    out, offset = {}, 0
    for item in pc.value_counts(ordered.column("ds")).to_pylist():  # one entry per day, in sorted order
        out[item["values"]] = ordered.slice(offset, item["counts"])
        offset += item["counts"]
    return out


def list_days(root: Path, stage: Stage, table_name: str, *, first: date | None = None,
              before: date | None = None, complete_only: bool = True) -> list[date]:
    """The days with a complete partition of ``stage/table_name`` (``first`` <= day < ``before``), in order;
    ``complete_only=False``: every day with a partition folder, whatever its state (to clear a range)."""
    folder = root / stage / table_name
    if not folder.is_dir():
        return []
    out = []
    for entry in folder.iterdir():
        if not entry.name.startswith("ds="):
            continue
        try:
            day = date.fromisoformat(entry.name[3:])
        except ValueError:
            continue
        if (first is None or day >= first) and (before is None or day < before) and (
                not complete_only or _state(entry) == "complete"):
            out.append(day)
    return sorted(out)
