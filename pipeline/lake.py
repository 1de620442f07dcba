"""The Parquet lake: ``<root>/<stage>/<table>/ds=<ds>/part-<n>.parquet``.

A partition is written whole into a hidden temporary folder and renamed into place, so a killed task
never leaves a partial partition visible and a rerun replaces the day instead of adding to it.
Rows are bucketed by ``subject_id`` so that one patient's rows stay in one part.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

Stage = str  # "raw" | "validated" | "enriched" | "quarantine" | ...


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
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for n, part in enumerate(parts):
            pq.write_table(part, tmp / f"part-{n}.parquet", compression="zstd")
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(final.glob("part-*.parquet"), key=_part_number)


def write_parts(root: Path, stage: Stage, table_name: str, ds: date, part: int, table: pa.Table) -> Path:
    """Write one part file of a partition (used by per-part mapped tasks), atomically by rename."""
    final_dir = partition_dir(root, stage, table_name, ds)
    final_dir.mkdir(parents=True, exist_ok=True)
    final = final_dir / f"part-{part}.parquet"
    tmp = final_dir / f".tmp-part-{part}-{uuid.uuid4().hex}.parquet"
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def clear_partition(root: Path, stage: Stage, table_name: str, ds: date) -> None:
    shutil.rmtree(partition_dir(root, stage, table_name, ds), ignore_errors=True)


def _swap_in(tmp: Path, final: Path) -> None:
    if final.exists():
        trash = final.parent / f".old-{final.name}-{uuid.uuid4().hex}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _part_number(path: Path) -> int:
    return int(path.stem.split("-")[1])


def list_parts(root: Path, stage: Stage, table_name: str, ds: date) -> list[Path]:
    folder = partition_dir(root, stage, table_name, ds)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("part-*.parquet"), key=_part_number)


def read_partition(root: Path, stage: Stage, table_name: str, ds: date, schema: pa.Schema | None = None) -> pa.Table:
    """All parts of a partition as one table (empty with ``schema`` when the partition is absent)."""
    parts = list_parts(root, stage, table_name, ds)
    if not parts:
        if schema is None:
            raise FileNotFoundError(f"no partition {partition_dir(root, stage, table_name, ds)}")
        return schema.empty_table()
    tables = [pq.read_table(p, schema=schema) for p in parts]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def iter_record_batches(path: Path, batch_size: int = 1024) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size)


def filter_in(table: pa.Table, column: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.filter(pc.is_in(table.column(column), value_set=pc.unique(values)))
