"""Small vectorised helpers shared by the risk modules (Arrow columns to numpy, subject pairs)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.risk.errors import R007, RiskError

SECONDS_PER_DAY = 86_400.0


def require(table: pa.Table, name: str, columns: tuple[str, ...] | list[str]) -> None:
    for column in columns:
        if column not in table.column_names:
            raise RiskError(R007.format(table=name, column=column))


def seconds(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Timestamps or dates as float seconds since the epoch, NaN where null (comparisons with NaN are False)."""
    if pa.types.is_date(column.type):
        column = pc.cast(column, pa.timestamp("s"))
    elif pa.types.is_timestamp(column.type):
        if column.type.tz is not None:
            column = pc.cast(column, pa.timestamp(column.type.unit))
        column = pc.cast(column, pa.timestamp("s"), safe=False)
    elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.cast(
            pc.strptime(column, format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True), pa.timestamp("s")
        )
    as_int = pc.cast(column, pa.int64())
    return np.asarray(pc.cast(as_int, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def ints(column: pa.ChunkedArray | pa.Array, fill: int = -1) -> np.ndarray:
    return np.asarray(
        pc.fill_null(pc.cast(column, pa.int64()), fill).to_numpy(zero_copy_only=False), dtype=np.int64
    )


def day_floor(secs: np.ndarray) -> np.ndarray:
    return np.floor(secs / SECONDS_PER_DAY)


def pairs_by_key(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with left[i] == right[j] (a many-to-many equi-join on one int key), without a Python loop."""
    order = np.argsort(right, kind="stable")
    right_sorted = right[order]
    start = np.searchsorted(right_sorted, left, side="left")
    stop = np.searchsorted(right_sorted, left, side="right")
    counts = stop - start
    left_idx = np.repeat(np.arange(len(left)), counts)
    first = np.repeat(start, counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return left_idx, order[first + within]


def lookup(keys: np.ndarray, table_keys: np.ndarray) -> np.ndarray:
    """Index of each key in ``table_keys`` (unique), -1 where absent."""
    if len(table_keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    order = np.argsort(table_keys, kind="stable")
    pos = np.searchsorted(table_keys[order], keys)
    pos = np.clip(pos, 0, len(table_keys) - 1)
    found = table_keys[order][pos] == keys
    return np.where(found, order[pos], -1)
