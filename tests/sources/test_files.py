"""Reading the CSV folders: streamed in batches, compression by content, each file read once."""

from __future__ import annotations

import gzip
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest

from pipeline.contracts import INPUT_TABLES, contract
from pipeline.sources import SourceError, extract_range, open_source
from pipeline.sources import files as files_module
from pipeline.sources.files import FolderReader
from pipeline.sources.mimic3 import Mimic3Reader
from pipeline.synth import generate
from tests.sources.conftest import ADMISSIONS, FILES, write_folder

D2 = date(2026, 1, 2)


def _same(a, b) -> None:
    for name in INPUT_TABLES:
        keys = [(k, "ascending") for k in contract(name).primary_key or ("subject_id",)] + [("ds", "ascending")]
        assert a.tables[name].sort_by(keys).equals(b.tables[name].sort_by(keys)), name
    assert a.rejects.sort_by("record_key").equals(b.rejects.sort_by("record_key"))
    assert a.open_admissions.sort_by("hadm_id").equals(b.open_admissions.sort_by("hadm_id"))
    assert a.counts() == b.counts()


def test_files_small_blocks_give_the_same_extract(mimic4_folder: Path) -> None:
    small = FolderReader(mimic4_folder, block_size=1)  # the smallest: twice the header line
    assert len(list(small.batches("labs"))) > 1
    assert len(list(small.batches("notes"))) > 1  # quoted multi-line note text across block boundaries
    for start, end in ((D2, D2), (date(2026, 1, 3), date(2026, 1, 3)), (date(2025, 12, 1), date(2026, 2, 1))):
        _same(extract_range(small, start, end), extract_range(FolderReader(mimic4_folder), start, end))


def test_files_generated_source_streamed_in_many_batches(generated_source) -> None:
    folder, first, last = generated_source
    small = FolderReader(folder, block_size=4096)
    assert len(list(small.batches("labs"))) > 20 and len(list(small.batches("notes"))) > 10
    for day in (first, first + timedelta(days=7), last):
        _same(extract_range(small, day), extract_range(FolderReader(folder), day))
    _same(extract_range(small, first, last), extract_range(FolderReader(folder), first, last))


def test_files_upper_case_gz_name_is_read_compressed(tmp_path: Path, mimic4_folder: Path) -> None:
    files = dict(FILES)
    del files["hosp/admissions.csv.gz"]
    files["hosp/ADMISSIONS.CSV.GZ"] = ADMISSIONS
    folder = tmp_path / "upper"
    write_folder(folder, files)
    with gzip.open(folder / "hosp" / "ADMISSIONS.CSV.GZ", "wb") as fh:
        fh.write(ADMISSIONS.encode())
    _same(extract_range(FolderReader(folder), D2), extract_range(FolderReader(mimic4_folder), D2))


def test_files_gz_name_without_gzip_content_is_named(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "src")
    (folder / "hosp" / "admissions.csv.gz").write_bytes(ADMISSIONS.encode())
    with pytest.raises(SourceError, match=r"admissions\.csv\.gz: named \.gz but not gzip-compressed"):
        extract_range(FolderReader(folder), D2)


@pytest.fixture(scope="module")
def mimic3_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m3") / "source"
    generate(out, layout="mimic3", patients=25, start=date(2026, 1, 1), days=2, history_days=15, seed=6)
    return out


def test_files_mimic3_upper_case_gz(tmp_path: Path, mimic3_folder: Path) -> None:
    copy = tmp_path / "m3gz"
    copy.mkdir()
    for path in mimic3_folder.glob("*.csv"):
        if path.name == "ADMISSIONS.csv":
            (copy / "ADMISSIONS.CSV.GZ").write_bytes(gzip.compress(path.read_bytes()))
        else:
            (copy / path.name).write_bytes(path.read_bytes())
    day = date(2026, 1, 1)
    _same(extract_range(open_source("mimic3", copy), day), extract_range(open_source("mimic3", mimic3_folder), day))


def test_files_each_file_is_read_once_per_extract(monkeypatch: pytest.MonkeyPatch, mimic3_folder: Path,
                                                  mimic4_folder: Path) -> None:
    opened: Counter = Counter()
    real = files_module.iter_text_batches

    def counting(path, *args, **kwargs):
        opened[path.name] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(files_module, "iter_text_batches", counting)
    extract_range(Mimic3Reader(mimic3_folder), date(2026, 1, 1))
    assert opened == Counter({name: 1 for name in ("ADMISSIONS.csv", "PATIENTS.csv", "DIAGNOSES_ICD.csv",
                                                   "LABEVENTS.csv", "PRESCRIPTIONS.csv", "NOTEEVENTS.csv",
                                                   "PROCEDURES_ICD.csv", "D_ICD_PROCEDURES.csv", "ICUSTAYS.csv")})
    opened.clear()
    extract_range(FolderReader(mimic4_folder), D2)
    assert set(opened.values()) == {1} and len(opened) == 6
