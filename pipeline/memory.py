"""Giving memory back to the operating system between the steps of a long run (the chunks of a backfill).

A backfill chunk builds Arrow tables, pandas frames (validation) and Python objects of a few hundred MB, then
drops them. Without help, the process keeps that memory: Python's cyclic garbage (Great Expectations results
hold their frames in reference cycles) waits for a full collection, Arrow's allocator (mimalloc or jemalloc)
keeps freed pages for reuse, and glibc's malloc keeps the top of its heaps. The process then grows with the
number of chunks run, not with the largest one. :func:`release_memory` frees all three.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable

import pyarrow as pa


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_memory() -> None:
    """Collect cyclic garbage, return the Arrow pool's unused pages and trim glibc's heaps."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
