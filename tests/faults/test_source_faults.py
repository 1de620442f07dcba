"""Hostile or unlucky source files (issue 13): each ends in a clear error naming the file and line, or in rows
set aside with their reason; never in wrong values loaded, and no error quotes a row's content."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pytest

from pipeline.sources import SourceError, extract_range
from pipeline.sources.files import FolderReader
from tests.sources.conftest import DISCHARGE, FILES, LABS, write_folder

DAY = date(2026, 1, 2)
SECRET = "Patient SSN 123-45-6789, phone (617) 555-0142"


def _extract(root: Path, **kw):
    return extract_range(FolderReader(root), DAY, **kw)


def _plain(files: dict) -> dict:
    """The same files uncompressed (a plain CSV can be cut inside a quoted value; a gzip cannot go unnoticed)."""
    return {rel.removesuffix(".gz"): content for rel, content in files.items()}


def test_faults_duplicate_header_name_is_a_source_error_naming_file_and_line(tmp_path: Path) -> None:
    header, rest = LABS.split("\n", 1)
    # charttime twice (the second in another case), the second holding storetime values
    bad = header.replace("storetime", "CHARTTIME") + "\n" + rest
    root = write_folder(tmp_path / "src", {**FILES, "hosp/labevents.csv.gz": bad})
    with pytest.raises(SourceError) as err:
        _extract(root)
    message = str(err.value)
    assert "labevents.csv.gz line 1" in message
    assert "'charttime' (columns 6 and 7)" in message.replace("CHARTTIME", "charttime")


def test_faults_plain_csv_cut_inside_a_quoted_note_is_refused(tmp_path: Path) -> None:
    cut = DISCHARGE[: DISCHARGE.index("Chief Complaint") + 10]  # cut inside the first note's quoted text
    root = write_folder(tmp_path / "src", _plain({**FILES, "note/discharge.csv.gz": cut}))
    with pytest.raises(SourceError) as err:
        _extract(root)
    message = str(err.value)
    assert "discharge.csv line 2:" in message and "ends before it closes" in message
    assert "Chief" not in message


def test_faults_cut_with_escaped_quotes_after_the_opening_one_names_the_opening_line(tmp_path: Path) -> None:
    text = DISCHARGE + '4-DS-1,3,300,DS,2,2026-01-03 11:00:00,,"Plan:\nsaid ""stop"" and\nthen'
    root = write_folder(tmp_path / "src", _plain({**FILES, "note/discharge.csv.gz": text}))
    with pytest.raises(SourceError, match=r"discharge\.csv line 7:"):
        _extract(root)


def test_faults_cut_after_an_odd_quote_earlier_in_the_file_is_still_refused(tmp_path: Path) -> None:
    text = DISCHARGE.replace('"Discharge Diagnosis: AKI"', '"Discharge Diagnosis"x AKI')  # text after a quote
    text += '4-DS-1,3,300,DS,2,2026-01-03 11:00:00,,"Plan:\nthen'
    root = write_folder(tmp_path / "src", _plain({**FILES, "note/discharge.csv.gz": text}))
    with pytest.raises(SourceError, match=r"discharge\.csv line 7:"):
        _extract(root)


def test_faults_stray_quote_in_an_unquoted_value_is_not_taken_for_a_cut(tmp_path: Path) -> None:
    labs = LABS.replace("1.4,1.4,mg/dL", '1.4",1.4,mg/dL', 1)  # an odd number of quotes, file complete
    root = write_folder(tmp_path / "src", _plain({**FILES, "hosp/labevents.csv.gz": labs}))
    result = _extract(root)
    assert result.tables["labs"].num_rows + result.counts()["labs"]["rows_set_aside"] == 3


def test_faults_malformed_row_is_set_aside_with_its_reason_and_the_day_goes_on(tmp_path: Path) -> None:
    # a notes row with 7 of 8 fields, carrying PHI that must not reach any message or record
    bad_row = f'9-DS-1,1,100,DS,1,2026-01-02 12:00:00,"{SECRET}"\n'
    root = write_folder(tmp_path / "src", {**FILES, "note/discharge.csv.gz": DISCHARGE + bad_row})
    # the source's first day (2026-01-02, the earliest discharge) is the day undatable rows are reported on
    result = _extract(root)
    notes_rejects = result.rejects.filter(pc.equal(result.rejects.column("source_table"), "notes"))
    assert notes_rejects.column("rule").to_pylist() == ["malformed_row"]
    detail = notes_rejects.column("detail")[0].as_py()
    # the note above spans three lines: record 5 starts on line 7
    assert "discharge.csv.gz line 7 (record 5): 7 fields, the header has 8" in detail
    assert SECRET[:10] not in detail and SECRET[:10] not in notes_rejects.column("payload")[0].as_py()
    assert result.tables["notes"].num_rows == 2  # the day's other notes are there
    assert result.counts()["notes"]["rows_malformed"] == 1


def test_faults_malformed_row_is_counted_but_not_reported_again_on_later_days(tmp_path: Path) -> None:
    bad_row = f'9-DS-1,1,100,DS,1,2026-01-03 12:00:00,"{SECRET}"\n'
    root = write_folder(tmp_path / "src", {**FILES, "note/discharge.csv.gz": DISCHARGE + bad_row})
    result = extract_range(FolderReader(root), date(2026, 1, 3))
    assert "malformed_row" not in result.rejects.column("rule").to_pylist()
    assert result.counts()["notes"]["rows_malformed"] == 1


def test_faults_mostly_malformed_file_fails_the_batch(tmp_path: Path) -> None:
    header, *rows = LABS.strip().split("\n")
    broken = [r.rsplit(",", 2)[0] for r in rows]  # every row two fields short
    root = write_folder(tmp_path / "src", {**FILES, "hosp/labevents.csv.gz": "\n".join([header, *broken]) + "\n"})
    with pytest.raises(SourceError) as err:
        _extract(root, max_malformed_share=0.2, min_rows_for_share=1)
    assert "4 of 4 rows have the wrong number of fields" in str(err.value)
    assert "mg/dL" not in str(err.value)


def test_faults_truncated_gzip_is_refused_without_quoting_rows(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "src")
    path = root / "note" / "discharge.csv.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 12])
    with pytest.raises(SourceError) as err:
        _extract(root)
    assert "discharge.csv.gz" in str(err.value) and "Chief" not in str(err.value)


def test_faults_nul_byte_in_a_note_is_set_aside_by_one_rule(tmp_path: Path) -> None:
    notes = DISCHARGE.replace("Patient denies", "Patient\x00 denies")
    root = write_folder(tmp_path / "src", {**FILES, "note/discharge.csv.gz": notes})
    result = _extract(root)
    rejects = result.rejects.filter(pc.equal(result.rejects.column("source_table"), "notes"))
    assert rejects.column("rule").to_pylist() == ["control_character"]
    assert rejects.column("detail")[0].as_py().startswith("column text:")
    assert "1-DS-1" not in result.tables["notes"].column("note_id").to_pylist()


def test_faults_tab_and_line_ends_are_not_control_characters(tmp_path: Path) -> None:
    notes = DISCHARGE.replace("Patient denies", "Patient\tdenies\r\n")
    root = write_folder(tmp_path / "src", {**FILES, "note/discharge.csv.gz": notes})
    assert "control_character" not in _extract(root).rejects.column("rule").to_pylist()


def test_faults_crlf_bom_extra_and_reordered_columns_read_like_the_clean_file(tmp_path: Path) -> None:
    clean = _extract(write_folder(tmp_path / "clean"))
    header, rest = LABS.split("\n", 1)
    cols = header.split(",")
    rows = [r.split(",") for r in rest.strip().split("\n")]
    # reordered (reverse) with an extra column; row 3 has a quoted comma-free value, so a plain split is fine
    assert all(len(r) == len(cols) for r in rows)
    reordered = ",".join(["extra", *reversed(cols)]) + "\n" + "\n".join(
        ",".join(["x", *reversed(r)]) for r in rows) + "\n"
    files = {**FILES, "hosp/labevents.csv.gz": "\ufeff" + reordered,
             "hosp/patients.csv.gz": "\ufeff" + FILES["hosp/patients.csv.gz"]}
    odd = _extract(write_folder(tmp_path / "odd", files, crlf=True))
    for name in ("labs", "patients", "admissions"):
        assert odd.tables[name].equals(clean.tables[name]), name
    # the notes' own line ends are kept as written
    assert odd.tables["notes"].column("note_id").equals(clean.tables["notes"].column("note_id"))


def test_faults_empty_file_and_fake_gzip_are_named(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "src", {**FILES, "hosp/diagnoses_icd.csv.gz": b""})
    with pytest.raises(SourceError, match=r"diagnoses_icd\.csv\.gz: file is empty"):
        _extract(root)
    root = write_folder(tmp_path / "src2")
    (root / "hosp" / "labevents.csv.gz").write_bytes(LABS.encode())
    with pytest.raises(SourceError, match=r"named \.gz but not gzip-compressed"):
        _extract(root)


def test_faults_invalid_utf8_is_set_aside_not_crashing(tmp_path: Path) -> None:
    data = DISCHARGE.encode().replace(b"Discharge Diagnosis", b"Discharge \xff\xfe Diagnosis")
    root = write_folder(tmp_path / "src", {**FILES, "note/discharge.csv.gz": data})
    result = extract_range(FolderReader(root), date(2026, 1, 3))
    assert result.rejects.column("rule").to_pylist() == ["invalid_encoding"]


def test_faults_two_megabyte_note_is_read_whole(tmp_path: Path) -> None:
    big = "word " * 400_000
    notes = DISCHARGE.replace("Discharge Diagnosis: AKI", big)
    root = write_folder(tmp_path / "src", {**FILES, "note/discharge.csv.gz": notes})
    result = extract_range(FolderReader(root), date(2026, 1, 3))
    assert result.tables["notes"].column("text")[0].as_py() == big
    # a value larger than the reader's block is refused by name, never cut or quoted
    with pytest.raises(SourceError, match="straddles two block boundaries"):
        extract_range(FolderReader(root, block_size=1 << 16), date(2026, 1, 3))


def test_faults_malformed_row_line_counts_blank_lines_and_multi_line_values(tmp_path: Path) -> None:
    bad_row = "9-DS-1,1,100,DS,1\n"
    root = write_folder(tmp_path / "src", {**FILES, "note/discharge.csv.gz": DISCHARGE + "\n\n" + bad_row})
    rejects = _extract(root).rejects
    assert rejects.filter(pc.equal(rejects.column("rule"), "malformed_row")).column("detail").to_pylist() == [
        f"{root / 'note' / 'discharge.csv.gz'} line 9 (record 5): 5 fields, the header has 8"]
