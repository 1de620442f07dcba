"""Giving memory back to the operating system between the steps of a long run (the chunks of a backfill).

A backfill chunk builds Arrow tables, pandas frames (validation) and Python objects of a few hundred MB, then
drops them. Without help, the process keeps that memory: Python's cyclic garbage (Great Expectations results
hold their frames in reference cycles) waits for a full collection, Arrow's allocator (mimalloc or jemalloc)
keeps freed pages for reuse, and glibc's malloc keeps the top of its heaps. The process then grows with the
number of chunks run, not with the largest one. :func:`release_memory` frees all three.

glibc also raises its mmap threshold each time a large block is freed (up to 32 MB), after which blocks of a
few MB (the source reader's buffers, Python bytes) come from heaps that fragment and are not returned:
staging a 40,000-patient year's labs read at 594 MB with the dynamic threshold, 468 MB with it fixed.
:func:`fix_mmap_threshold` fixes it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable

import pyarrow as pa


@functools.cache
def _libc_function(name: str, argtypes: tuple, restype) -> Callable[..., int] | None:
    """A function of glibc (``malloc_trim``, ``mallopt``); None where the C library has none (musl, macOS)."""
    library = ctypes.util.find_library("c")
    if not library:
        return None
    try:
        function = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = restype
    return function


M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc malloc.h)
MMAP_THRESHOLD_BYTES = 128 << 10  # glibc's initial value: larger blocks are mapped and unmapped on their own


@functools.cache
def fix_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at 128 KiB for this process (no dynamic raise); False where there is no glibc."""
    mallopt = _libc_function("mallopt", (ctypes.c_int, ctypes.c_int), ctypes.c_int)
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_memory() -> None:
    """Collect cyclic garbage, return the Arrow pool's unused pages and trim glibc's heaps."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    trim = _libc_function("malloc_trim", (ctypes.c_size_t,), ctypes.c_int)
    if trim is not None:
        trim(0)
