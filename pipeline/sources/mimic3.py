"""MIMIC-III v1.4 folder: upper-case CSV files with ROW_ID, mapped to the canonical tables.

Columns that MIMIC-III does not carry are derived here, documented rather than guessed:
- patients.anchor_year / anchor_age: the year of the patient's first admission in the source and the age
  (whole years from DOB) at that admission, capped at 91 as MIMIC-IV caps it (MIMIC-III moves DOB of
  patients over 89 about 300 years back, so uncapped ages would be absurd);
- diagnoses.icd_version and procedures.icd_version: always 9 (MIMIC-III codes are ICD-9 only);
- notes.charttime: CHARTTIME, else CHARTDATE at 00:00:00 (discharge summaries only carry CHARTDATE);
- notes marked ISERROR=1 by the source are set aside with rule ``source_marked_error``.

The first admission per patient is gathered while the admissions stream past (extraction reads them
before the patients), so ADMISSIONS is read once; a reader asked for patients first scans only the two
columns it needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.sources.base import _TIMESTAMP_RE, TIMESTAMP_FORMAT
from pipeline.sources.files import BLOCK_SIZE, FolderReader

_AGE_CAP = 91


def _parse_ts(text: pa.Array) -> pa.Array:
    ok = pc.fill_null(pc.match_substring_regex(text, _TIMESTAMP_RE), False)
    return pc.strptime(pc.if_else(ok, text, pa.scalar(None, pa.string())), TIMESTAMP_FORMAT, "s", error_is_null=True)


def _first_admits(batches: Iterator[pa.Table]) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Each batch, with the earliest readable admission time per subject within it."""
    for raw in batches:
        admit = _parse_ts(raw.column("admittime").combine_chunks())
        firsts = (
            pa.table({"subject_id": raw.column("subject_id"), "admit": admit})
            .filter(pc.is_valid(admit))
            .group_by("subject_id")
            .aggregate([("admit", "min")])
            .rename_columns(["subject_id", "admit"])
        )
        yield raw, firsts


def _merge(parts: list[pa.Table]) -> pa.Table:
    if not parts:
        return pa.table({"subject_id": pa.array([], pa.string()), "admit": pa.array([], pa.timestamp("s"))})
    return pa.concat_tables(parts).group_by("subject_id").aggregate([("admit", "min")]).rename_columns(
        ["subject_id", "admit"])


class Mimic3Reader(FolderReader):
    layout = "mimic3"

    def __init__(self, root: Path, *, block_size: int = BLOCK_SIZE) -> None:
        super().__init__(root, "mimic3", block_size=block_size)
        self._first_admit: pa.Table | None = None  # subject_id (text), admit: first admission time

    def batches(self, table: str) -> Iterator[pa.Table]:
        if table == "admissions":
            parts = []
            for raw, firsts in _first_admits(super().batches("admissions")):
                parts.append(firsts)
                yield raw
            self._first_admit = _merge(parts)  # only once the whole file has been seen
            return
        for raw in super().batches(table):
            if table == "patients":
                yield self._patients(raw)
            elif table in ("diagnoses", "procedures"):
                yield raw.append_column("icd_version", pa.array(["9"] * raw.num_rows, pa.string()))
            elif table == "notes":
                yield self._notes(raw)
            else:
                yield raw

    def _first_admissions(self) -> pa.Table:
        if self._first_admit is None:
            self._first_admit = _merge([firsts for _, firsts in _first_admits(super().batches("admissions"))])
        return self._first_admit

    def _patients(self, raw: pa.Table) -> pa.Table:
        first = self._first_admissions()
        idx = pc.index_in(raw.column("subject_id"), value_set=first.column("subject_id").combine_chunks())
        first_admit = pc.take(first.column("admit").combine_chunks(), idx)
        dob = _parse_ts(raw.column("dob").combine_chunks())
        years = pc.years_between(dob, first_admit)
        # a birthday later in the year than the admission has not happened yet
        before_birthday = pc.less(
            pc.add(pc.multiply(pc.month(first_admit), 100), pc.day(first_admit)),
            pc.add(pc.multiply(pc.month(dob), 100), pc.day(dob)),
        )
        age = pc.min_element_wise(pc.subtract(years, pc.if_else(before_birthday, 1, 0)), _AGE_CAP)
        dob_bad = pc.and_(pc.is_valid(raw.column("dob")), pc.is_null(dob))
        rule = pc.if_else(dob_bad, pa.scalar("unparseable_timestamp"), pa.scalar(None, pa.string()))
        detail = pc.if_else(
            dob_bad, pa.scalar("column dob: not in the documented format YYYY-MM-DD HH:MM:SS"), pa.scalar(None, pa.string())
        )
        return (
            raw.append_column("anchor_age", age.cast(pa.string()))
            .append_column("anchor_year", pc.year(first_admit).cast(pa.string()))
            .append_column("_reader_rule", rule)
            .append_column("_reader_detail", detail)
        )

    def _notes(self, raw: pa.Table) -> pa.Table:
        chartdate = raw.column("chartdate").combine_chunks()
        midnight = pc.binary_join_element_wise(chartdate, pa.scalar(" 00:00:00"), "")
        charttime = pc.coalesce(raw.column("charttime").combine_chunks(), midnight)
        iserror = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(raw.column("iserror").combine_chunks()), "1"), False)
        rule = pc.if_else(iserror, pa.scalar("source_marked_error"), pa.scalar(None, pa.string()))
        detail = pc.if_else(iserror, pa.scalar("ISERROR=1 in NOTEEVENTS"), pa.scalar(None, pa.string()))
        raw = raw.set_column(raw.column_names.index("charttime"), "charttime", charttime)
        return raw.append_column("_reader_rule", rule).append_column("_reader_detail", detail)
