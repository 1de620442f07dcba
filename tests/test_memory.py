"""release_memory: cyclic garbage is collected and the Arrow pool's unused pages go back."""

from __future__ import annotations

import gc
import weakref

import pyarrow as pa

from pipeline.memory import release_memory


class _Holder:
    pass


def test_release_memory_collects_cycles_and_arrow_buffers() -> None:
    gc.disable()  # no automatic collection: only release_memory can free the cycle
    try:
        holder = _Holder()
        holder.self = holder  # type: ignore[attr-defined]
        holder.table = pa.table({"x": pa.array(range(1_000_000), pa.int64())})  # type: ignore[attr-defined]
        alive = weakref.ref(holder)
        before = pa.total_allocated_bytes()
        del holder
        assert alive() is not None  # held by its own cycle
        release_memory()
        assert alive() is None
        assert pa.total_allocated_bytes() <= before - 8_000_000
    finally:
        gc.enable()


def test_fix_mmap_threshold_applies_on_glibc() -> None:
    import platform

    from pipeline.memory import fix_mmap_threshold

    assert fix_mmap_threshold() is (platform.libc_ver()[0] == "glibc")
