from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import lake

DS = date(2026, 1, 2)


def _table(n: int) -> pa.Table:
    return pa.table({"subject_id": [i // 3 for i in range(n)], "v": list(range(n))})


def test_lake_bucket_parts_keep_subjects_together() -> None:
    parts = lake.bucket_parts(_table(30), 7)
    seen: set[int] = set()
    for part in parts:
        subjects = set(part.column("subject_id").to_pylist())
        assert not subjects & seen
        seen |= subjects
    assert sum(p.num_rows for p in parts) == 30


def _leftovers(table_dir: Path, ds: date = DS) -> list[str]:
    """Anything beside the partition link and its one live version (temporary names, stale versions)."""
    name = f"ds={ds.isoformat()}"
    live = (table_dir / name).resolve()
    assert live.parent == table_dir / lake.VERSIONS / name  # the partition's own folder of versions
    names = [p.name for p in table_dir.iterdir() if p.name not in (name, lake.VERSIONS)]
    names += [p.name for p in (table_dir / lake.VERSIONS).iterdir() if p.name != name]
    names += [p.name for p in live.parent.iterdir() if p.name != live.name]
    return names


def test_lake_write_replaces_partition(tmp_path: Path) -> None:
    first = lake.write_partition(tmp_path, "raw", "labs", DS, _table(30), part_rows=10)
    assert len(first) == 3
    second = lake.write_partition(tmp_path, "raw", "labs", DS, _table(6), part_rows=10)
    assert [p.name for p in second] == ["part-0.parquet"]
    assert lake.read_partition(tmp_path, "raw", "labs", DS).num_rows == 6
    assert lake.list_parts(tmp_path, "raw", "labs", DS) == second
    assert _leftovers(tmp_path / "raw" / "labs") == []


def test_lake_failed_write_leaves_previous_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake.write_partition(tmp_path, "raw", "labs", DS, _table(6), part_rows=10)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(lake.pq, "write_table", boom)
    with pytest.raises(OSError):
        lake.write_partition(tmp_path, "raw", "labs", DS, _table(30), part_rows=10)
    monkeypatch.undo()
    assert lake.read_partition(tmp_path, "raw", "labs", DS).num_rows == 6
    assert _leftovers(tmp_path / "raw" / "labs") == []


def test_lake_crash_at_the_swap_keeps_the_old_partition_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process killed while replacing a partition: readers see the old partition, never a missing one."""
    lake.write_partition(tmp_path, "raw", "labs", DS, _table(6), part_rows=10)
    final = lake.partition_dir(tmp_path, "raw", "labs", DS)
    real_replace = os.replace
    seen_during_write: list[int] = []

    def killed_at_swap(src, dst, *args, **kwargs):
        # what a concurrent reader sees at every rename of the write, then the "kill" at the partition itself
        seen_during_write.append(lake.read_partition(tmp_path, "raw", "labs", DS).num_rows)
        if Path(dst) == final or Path(src) == final:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(lake.os, "replace", killed_at_swap)
    # a killed process cleans up nothing
    monkeypatch.setattr(lake.shutil, "rmtree", lambda *a, **k: None)
    monkeypatch.setattr(Path, "unlink", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        lake.write_partition(tmp_path, "raw", "labs", DS, _table(30), part_rows=10)
    monkeypatch.undo()
    assert seen_during_write and set(seen_during_write) == {6}
    assert lake.read_partition(tmp_path, "raw", "labs", DS).num_rows == 6
    # the abandoned version is cleaned up by the next write of the partition
    assert _leftovers(tmp_path / "raw" / "labs")
    lake.write_partition(tmp_path, "raw", "labs", DS, _table(9), part_rows=10)
    assert lake.read_partition(tmp_path, "raw", "labs", DS).num_rows == 9
    assert _leftovers(tmp_path / "raw" / "labs") == []


def test_lake_replaces_a_plain_folder_from_an_older_lake(tmp_path: Path) -> None:
    legacy = lake.partition_dir(tmp_path, "raw", "labs", DS)
    legacy.mkdir(parents=True)
    pq.write_table(_table(4), legacy / "part-0.parquet")
    with pytest.raises(lake.PartitionIncompleteError, match="no _SUCCESS marker"):
        lake.read_partition(tmp_path, "raw", "labs", DS)
    lake.write_partition(tmp_path, "raw", "labs", DS, _table(5))
    assert lake.read_partition(tmp_path, "raw", "labs", DS).num_rows == 5
    assert _leftovers(tmp_path / "raw" / "labs") == []


def test_lake_empty_table_writes_one_empty_part(tmp_path: Path) -> None:
    paths = lake.write_partition(tmp_path, "raw", "notes", DS, _table(0))
    assert len(paths) == 1
    assert lake.read_partition(tmp_path, "raw", "notes", DS).num_rows == 0


def test_lake_never_written_is_not_empty(tmp_path: Path) -> None:
    schema = pa.schema([("subject_id", pa.int64())])
    with pytest.raises(lake.PartitionNotFoundError, match="never written"):
        lake.read_partition(tmp_path, "raw", "x", DS, schema)
    with pytest.raises(FileNotFoundError):
        lake.read_partition(tmp_path, "raw", "x", DS)
    assert lake.read_partition(tmp_path, "raw", "x", DS, schema, missing_ok=True).num_rows == 0
    assert lake.list_parts(tmp_path, "raw", "x", DS) == []


def test_lake_marker_lists_the_parts(tmp_path: Path) -> None:
    lake.write_partition(tmp_path, "raw", "labs", DS, _table(30), part_rows=10)
    folder = lake.partition_dir(tmp_path, "raw", "labs", DS)
    assert json.loads((folder / lake.SUCCESS).read_text())["rows"] == 30
    (folder / "part-1.parquet").unlink()
    with pytest.raises(lake.PartitionIncompleteError, match=r"part-1\.parquet"):
        lake.read_partition(tmp_path, "raw", "labs", DS)


def test_lake_parts_written_by_mapped_tasks(tmp_path: Path) -> None:
    lake.write_parts(tmp_path, "enriched", "note_entities", DS, 1, _table(3))
    lake.write_parts(tmp_path, "enriched", "note_entities", DS, 0, _table(2))
    assert [p.name for p in lake.list_parts(tmp_path, "enriched", "note_entities", DS)] == [
        "part-0.parquet", "part-1.parquet"]
    assert lake.read_partition(tmp_path, "enriched", "note_entities", DS).num_rows == 5
    lake.clear_partition(tmp_path, "enriched", "note_entities", DS)
    with pytest.raises(lake.PartitionNotFoundError):
        lake.read_partition(tmp_path, "enriched", "note_entities", DS)
    assert list((tmp_path / "enriched" / "note_entities" / lake.VERSIONS).iterdir()) == []


def test_lake_write_part_batches_streams_and_is_atomic(tmp_path):
    table = _table(25)
    batches = table.to_batches(max_chunksize=7)
    path = lake.write_part_batches(tmp_path, "enriched", "labs", DS, 0, iter(batches), table.schema)
    assert pq.read_table(path).equals(table)

    def failing():
        yield batches[0]
        raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError, match="killed midway"):
        lake.write_part_batches(tmp_path, "enriched", "labs", DS, 1, failing(), table.schema)
    folder = lake.partition_dir(tmp_path, "enriched", "labs", DS)
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".parquet") == ["part-0.parquet"]
