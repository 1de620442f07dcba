"""The backfill's one pass over the source (pipeline/sources/stream.py): extracting a range from the staged copy
gives what extracting it from the source gives; a staging that is interrupted leaves nothing that is read."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.contracts import INPUT_TABLES
from pipeline.sources import extract_range
from pipeline.sources.files import FolderReader
from pipeline.sources.stream import (
    ADMISSION_DATED,
    STAGING_ORDER,
    StagedReader,
    StagingIncompleteError,
    admission_days,
    stage_table,
    staged_tables,
)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.synth import generate

    out = tmp_path_factory.mktemp("stream_source")
    generate(out, patients=80, start=date(2026, 1, 1), days=2, history_days=45, seed=5, messy=True, radiology=True)
    # one labs row with a field too many: set aside by the reader (malformed_row), which the copy must carry
    labs = next(p for p in (out / "hosp").iterdir() if p.name.startswith("labevents"))
    opener = gzip.open if labs.suffix == ".gz" else open
    with opener(labs, "rt", encoding="utf-8", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    lines.insert(5, lines[5].rstrip("\r\n") + ",extra\n")
    with opener(labs, "wt", encoding="utf-8", newline="") as f:
        f.writelines(lines)
    return out


@pytest.fixture(scope="module")
def staged(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("staged")
    reader = FolderReader(source, block_size=64 << 10)  # several batches per file
    days = None
    for table in STAGING_ORDER:
        if table in ADMISSION_DATED and days is None:
            days = admission_days(out)
        stage_table(reader, table, out, admissions=days)
    return out


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([(name, "ascending") for name in table.column_names
                          if not pa.types.is_large_string(table.schema.field(name).type)])


@pytest.mark.parametrize("first,last", [
    (date(2025, 11, 20), date(2025, 11, 30)),  # a chunk inside a month
    (date(2025, 12, 25), date(2026, 1, 2)),  # across months, up to the end of the source
    (date(2025, 11, 17), date(2025, 11, 17)),  # the first day of the source window
])
def test_extracting_from_the_staged_copy_equals_extracting_from_the_source(source: Path, staged: Path,
                                                                         first: date, last: date) -> None:
    direct = extract_range(FolderReader(source), first, last)
    copied = extract_range(StagedReader(staged, first, last, batch_rows=500), first, last)
    assert copied.counts() == direct.counts()
    for name in INPUT_TABLES:
        assert _sorted(copied.tables[name]).equals(_sorted(direct.tables[name])), name
    assert _sorted(copied.rejects).equals(_sorted(direct.rejects))
    assert _sorted(copied.open_admissions).equals(_sorted(direct.open_admissions))
    assert copied.undatable_day == direct.undatable_day
    assert copied.malformed == direct.malformed and sum(direct.malformed.values()) == 1
    assert copied.absent == direct.absent


def test_labs_and_notes_are_partitioned_by_month_so_a_chunk_reads_only_its_months(staged: Path) -> None:
    for table in ("labs", "notes", "diagnoses", "prescriptions"):
        months = sorted(p.name for p in (staged / table / "data").iterdir())
        assert "staged_month=2025-12" in months and len(months) >= 3, (table, months)
    assert staged_tables(staged).keys() == set(INPUT_TABLES)


class _Breaks:
    """A reader whose labs stream fails after its first batch (a killed read, a lost mount)."""

    layout = "mimic4"

    def __init__(self, inner: FolderReader) -> None:
        self.inner = inner

    def batches(self, table: str):
        for n, batch in enumerate(self.inner.batches(table)):
            if n == 1:
                raise OSError("connection lost")
            yield batch


def test_an_interrupted_staging_leaves_no_table_and_keeps_the_previous_copy(source: Path, tmp_path: Path) -> None:
    reader = FolderReader(source, block_size=64 << 10)
    with pytest.raises(OSError, match="connection lost"):
        stage_table(_Breaks(reader), "labs", tmp_path)
    assert "labs" not in staged_tables(tmp_path)
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(StagingIncompleteError, match="stage it again"):
        next(StagedReader(tmp_path, date(2025, 12, 1), date(2025, 12, 31)).batches("labs"))
    rows = stage_table(reader, "labs", tmp_path)
    with pytest.raises(OSError):
        stage_table(_Breaks(reader), "labs", tmp_path)
    assert staged_tables(tmp_path)["labs"] == rows  # the complete copy is still the one read


def test_a_hosp_only_source_stages_its_absent_modules_empty_and_says_why(tmp_path: Path) -> None:
    from pipeline.synth import generate

    source = tmp_path / "src"
    generate(source, patients=30, start=date(2026, 1, 1), days=1, history_days=20, seed=3, modules=("hosp",))
    out = tmp_path / "staged"
    reader = FolderReader(source)
    days = None
    for table in STAGING_ORDER:
        if table in ADMISSION_DATED and days is None:
            days = admission_days(out)
        stage_table(reader, table, out, admissions=days)
    first, last = date(2025, 12, 20), date(2026, 1, 1)
    direct = extract_range(FolderReader(source), first, last)
    copied = extract_range(StagedReader(out, first, last), first, last)
    assert set(copied.absent) == {"notes", "icu_stays"} and copied.absent == direct.absent
    assert copied.tables["notes"].num_rows == 0 and copied.tables["notes"].schema == direct.tables["notes"].schema
    assert copied.counts() == direct.counts()


def test_staging_with_small_row_groups_and_few_open_files_keeps_every_row(source: Path, staged: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The staging writer bounds what it holds (row groups, pending bytes, open files, rows per file); with tight
    limits a month spans several files and the copy still reads back row for row as the default one."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.sources import stream

    monkeypatch.setattr(stream, "GROUP_ROWS", 40)
    monkeypatch.setattr(stream, "PENDING_BYTES", 20_000)
    monkeypatch.setattr(stream, "MAX_OPEN_FILES", 2)
    monkeypatch.setattr(stream, "FILE_ROWS", 150)
    out = tmp_path / "tight"
    reader = FolderReader(source, block_size=64 << 10)
    for table in ("admissions", "notes", "labs"):
        stage_table(reader, table, out)
    first, last = date(2025, 11, 1), date(2026, 1, 31)
    for table in ("admissions", "notes", "labs"):
        assert staged_tables(out)[table] == staged_tables(staged)[table]
        tight = pa.concat_tables(StagedReader(out, first, last).batches(table))
        default = pa.concat_tables(StagedReader(staged, first, last).batches(table))
        if table == "notes":  # witness stubs are read in a different order: compare the full rows only
            tight, default = (t.filter(pc.is_valid(t.column("text"))) for t in (tight, default))
        assert _sorted(tight).equals(_sorted(default)), table
    files = list((out / "labs" / "data").rglob("*.parquet"))
    assert all(pq.ParquetFile(p).metadata.num_rows <= 150 for p in files)
    assert len(files) > len({p.parent for p in files})  # months continued in new files
