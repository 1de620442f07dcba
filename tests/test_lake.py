from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
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


def test_lake_write_replaces_partition(tmp_path: Path) -> None:
    first = lake.write_partition(tmp_path, "raw", "labs", DS, _table(30), part_rows=10)
    assert len(first) == 3
    second = lake.write_partition(tmp_path, "raw", "labs", DS, _table(6), part_rows=10)
    assert [p.name for p in second] == ["part-0.parquet"]
    assert lake.read_partition(tmp_path, "raw", "labs", DS).num_rows == 6
    assert not [p for p in (tmp_path / "raw" / "labs").iterdir() if p.name.startswith(".")]


def test_lake_failed_write_leaves_previous_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake.write_partition(tmp_path, "raw", "labs", DS, _table(6), part_rows=10)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(lake.pq, "write_table", boom)
    with pytest.raises(OSError):
        lake.write_partition(tmp_path, "raw", "labs", DS, _table(30), part_rows=10)
    monkeypatch.undo()
    assert lake.read_partition(tmp_path, "raw", "labs", DS).num_rows == 6
    assert not [p for p in (tmp_path / "raw" / "labs").iterdir() if p.name.startswith(".")]


def test_lake_empty_table_writes_one_empty_part(tmp_path: Path) -> None:
    paths = lake.write_partition(tmp_path, "raw", "notes", DS, _table(0))
    assert len(paths) == 1
    assert lake.read_partition(tmp_path, "raw", "notes", DS).num_rows == 0


def test_lake_missing_partition(tmp_path: Path) -> None:
    schema = pa.schema([("subject_id", pa.int64())])
    assert lake.read_partition(tmp_path, "raw", "x", DS, schema).num_rows == 0
    with pytest.raises(FileNotFoundError):
        lake.read_partition(tmp_path, "raw", "x", DS)
