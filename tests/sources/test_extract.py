from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pytest

from pipeline.sources import SourceError, extract_range, open_source
from tests.sources.conftest import ADMISSIONS, DIAGNOSES, DISCHARGE, FILES, LABS, write_folder

D2 = date(2026, 1, 2)
D3 = date(2026, 1, 3)


def _extract(folder: Path, start: date = D2, end: date | None = None, layout: str = "mimic4"):
    return extract_range(open_source(layout, folder), start, end)


def test_extract_assigns_rows_to_days(mimic4_folder: Path) -> None:
    result = _extract(mimic4_folder)
    t = result.tables
    assert sorted(t["admissions"].column("hadm_id").to_pylist()) == [100, 200]
    assert sorted(t["patients"].column("subject_id").to_pylist()) == [1, 2]
    assert t["diagnoses"].num_rows == 4
    assert sorted(t["labs"].column("labevent_id").to_pylist()) == [2, 3, 4]  # by charttime
    assert sorted(t["notes"].column("note_id").to_pylist()) == ["1-DS-1", "2-DS-1"]
    assert t["prescriptions"].num_rows == 2
    assert result.rejects.num_rows == 0
    assert set(pc.unique(t["admissions"].column("ds")).to_pylist()) == {D2}
    # admission 300 (admitted before the end of D2, discharged D3) and 101 are open on D2
    assert sorted(result.open_admissions.column("hadm_id").to_pylist()) == [101, 300]


def test_extract_keeps_codes_as_text_and_free_text_intact(mimic4_folder: Path) -> None:
    t = _extract(mimic4_folder).tables
    assert "04100" in t["diagnoses"].column("icd_code").to_pylist()
    assert "V4581" in t["diagnoses"].column("icd_code").to_pylist()
    ndcs = t["prescriptions"].column("ndc").to_pylist()
    assert "00054829725" in ndcs
    note = dict(zip(t["notes"].column("note_id").to_pylist(), t["notes"].column("text").to_pylist(), strict=True))
    assert note["2-DS-1"] == 'Brief Hospital Course: said "fine", path C:\\temp\\x'
    assert note["1-DS-1"].count("\n") == 2
    comments = t["labs"].column("comments").to_pylist()
    assert 'said "ok" \\ fine' in comments


def test_extract_range_and_empty_day(mimic4_folder: Path) -> None:
    both = _extract(mimic4_folder, D2, D3)
    assert both.tables["admissions"].num_rows == 3
    empty = _extract(mimic4_folder, date(2030, 1, 1))
    assert all(t.num_rows == 0 for t in empty.tables.values())


def test_extract_crlf_and_upper_case_headers(tmp_path: Path) -> None:
    files = dict(FILES)
    header, rest = ADMISSIONS.split("\n", 1)
    files["hosp/admissions.csv.gz"] = header.upper() + "\n" + rest
    folder = write_folder(tmp_path / "src", files, crlf=True)
    result = _extract(folder)
    assert result.tables["admissions"].num_rows == 2
    assert result.tables["notes"].column("text").to_pylist()[0].count("\r\n") == 2


def test_extract_sets_aside_mangled_timestamp(tmp_path: Path) -> None:
    files = dict(FILES)
    files["hosp/labevents.csv.gz"] = LABS.replace("2026-01-02 05:00:00,,139", "2026-01-02 05:00:00,1/2/26 5:00,139")
    files["hosp/admissions.csv.gz"] = ADMISSIONS.replace("2025-12-30 09:00:00", "10/23/64 21:09")
    result = _extract(write_folder(tmp_path / "src", files))
    rej = result.rejects.to_pylist()
    by_key = {(r["source_table"], r["record_key"]): r for r in rej}
    assert by_key[("labs", "3")]["rule"] == "unparseable_timestamp"
    assert "storetime" in by_key[("labs", "3")]["detail"]
    assert by_key[("admissions", "200")]["rule"] == "unparseable_timestamp"
    assert "10/23/64 21:09" in by_key[("admissions", "200")]["payload"]
    assert 200 not in result.tables["admissions"].column("hadm_id").to_pylist()
    counts = result.counts()
    assert counts["admissions"]["rows_extracted"] == 2
    assert counts["admissions"]["rows_set_aside"] == 1


def test_extract_non_utf8_note_is_set_aside(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = dict(FILES)
    # two notes with bytes that are not UTF-8: one on D2, one (Latin-1 'é', a lone 0xff 0xfe) on D3
    files["note/discharge.csv.gz"] = DISCHARGE.encode().replace(b"AKI", b"AKI \xff\xfe caf\xe9").replace(
        b"said", b"sa\xffid")
    folder = write_folder(tmp_path / "src", files)
    d2 = _extract(folder)
    assert [(r["record_key"], r["rule"]) for r in d2.rejects.to_pylist()] == [("2-DS-1", "invalid_encoding")]
    assert d2.tables["notes"].column("note_id").to_pylist() == ["1-DS-1"]
    d3 = _extract(folder, D3)
    assert [(r["record_key"], r["rule"]) for r in d3.rejects.to_pylist()] == [("3-DS-1", "invalid_encoding")]
    assert d3.tables["notes"].num_rows == 0
    # the other columns of the set-aside row are intact (only the text is not UTF-8)
    assert d3.rejects.column("ds").to_pylist() == [D3]


def test_extract_errors_name_what_is_missing(tmp_path: Path, mimic4_folder: Path) -> None:
    with pytest.raises(SourceError, match="source folder not found"):
        _extract(tmp_path / "nowhere")
    (mimic4_folder / "hosp" / "labevents.csv.gz").unlink()
    with pytest.raises(SourceError, match=r"labevents\.csv"):
        _extract(mimic4_folder)


def test_extract_missing_required_column(tmp_path: Path) -> None:
    files = dict(FILES)
    files["hosp/diagnoses_icd.csv.gz"] = DIAGNOSES.replace("icd_code", "code")
    with pytest.raises(SourceError, match=r"required column.*icd_code"):
        _extract(write_folder(tmp_path / "src", files))


def test_extract_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "src")
    with gzip.open(folder / "hosp" / "prescriptions.csv.gz", "wb") as fh:
        fh.write(b"")
    with pytest.raises(SourceError, match="empty"):
        _extract(folder)


def test_extract_header_only_file_gives_zero_rows(tmp_path: Path) -> None:
    files = dict(FILES)
    files["hosp/prescriptions.csv.gz"] = FILES["hosp/prescriptions.csv.gz"].split("\n", 1)[0] + "\n"
    result = _extract(write_folder(tmp_path / "src", files))
    assert result.tables["prescriptions"].num_rows == 0


def test_extract_duplicate_key_passes_through_for_validation(tmp_path: Path) -> None:
    files = dict(FILES)
    files["hosp/labevents.csv.gz"] = LABS + LABS.splitlines()[2] + "\n"
    result = _extract(write_folder(tmp_path / "src", files))
    ids = result.tables["labs"].column("labevent_id").to_pylist()
    assert ids.count(2) == 2  # extraction never drops; validation quarantines both
