"""Extraction: source rows (as text) → canonical Arrow tables for one day or a range of days.

Readers give every column as text under its canonical name; this module types them against the table
contracts (schemas/tables/*.yaml) and decides which rows belong to which day. A value in a format the
contract does not document (a timestamp rewritten by a spreadsheet, a number with letters, bytes that are
not UTF-8) is never guessed: its row is set aside with a rule and a detail, and counted.

Which rows belong to a day ``ds`` (source date = ds + ``day_shift``):
- admissions: the date of ``dischtime`` (when unreadable: of ``admittime``);
- labs and notes: the date of ``charttime`` (when unreadable: their admission's day);
- diagnoses and prescriptions: their admission's day;
- patients: those referenced by that day's admissions (one row per patient and day).
Rows with no readable day at all are counted as ``unattributed`` and reported, never assigned by guess.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.schemas import INPUT_TABLES, arrow_schema, contract, redact_free_text

log = logging.getLogger(__name__)

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
_TIMESTAMP_RE = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
_DATE_RE = r"^\d{4}-\d{2}-\d{2}( 00:00:00)?$"
_INT_RE = r"^[+-]?\d+$"
_FLOAT_RE = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]?(?i:nan|inf|infinity)$"

QUARANTINE_SCHEMA = arrow_schema("quarantine")


class SourceError(RuntimeError):
    """The source cannot be read as documented (missing folder, file or column); the message names it."""


class SourceReader(Protocol):
    layout: str

    def read(self, table: str) -> pa.Table:
        """All rows of a canonical table as text columns with canonical names (plus ``_bad_encoding``)."""
        ...


@dataclass
class ExtractResult:
    ds_start: date
    ds_end: date
    tables: dict[str, pa.Table]
    rejects: pa.Table  # quarantine schema, run_id empty (the task fills it)
    open_admissions: pa.Table  # hadm_id, subject_id, admittime, dischtime: admitted by ds_end, discharged later
    unattributed: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for name, table in self.tables.items():
            rejected = int(pc.sum(pc.equal(self.rejects.column("source_table"), name)).as_py() or 0)
            out[name] = {"rows_extracted": table.num_rows + rejected, "rows_typed": table.num_rows,
                         "rows_set_aside": rejected, "rows_unattributed": self.unattributed.get(name, 0)}
        return out


# --- typing --------------------------------------------------------------------------------------
@dataclass
class Typed:
    table: pa.Table  # typed canonical columns (no ds yet)
    bad_rule: pa.Array  # per row: null when fine, else the rule that sets the row aside
    bad_detail: pa.Array


def _parse(column: pa.ChunkedArray, type_name: str) -> tuple[pa.Array, pa.Array]:
    """Parse a text column to ``type_name``; returns (typed values, mask of non-null unparseable values)."""
    text = pc.utf8_trim_whitespace(column.combine_chunks())
    present = pc.and_kleene(pc.is_valid(text), pc.not_equal(text, ""))
    present = pc.fill_null(present, False)
    if type_name == "string":
        return column.combine_chunks(), pa.array(np.zeros(len(text), dtype=bool))
    if type_name in ("int64", "int32"):
        ok = pc.fill_null(pc.match_substring_regex(text, _INT_RE), False)
        values = pc.if_else(ok, text, pa.scalar(None, pa.string())).cast(pa.int64())
        if type_name == "int32":
            in_range = pc.fill_null(pc.less_equal(pc.abs(values), 2**31 - 1), True)
            ok = pc.and_(ok, in_range)
            values = pc.if_else(in_range, values, pa.scalar(None, pa.int64())).cast(pa.int32())
    elif type_name == "float64":
        ok = pc.fill_null(pc.match_substring_regex(text, _FLOAT_RE), False)
        values = pc.if_else(ok, text, pa.scalar(None, pa.string())).cast(pa.float64())
    elif type_name == "timestamp":
        ok = pc.fill_null(pc.match_substring_regex(text, _TIMESTAMP_RE), False)
        values = pc.strptime(pc.if_else(ok, text, pa.scalar(None, pa.string())), TIMESTAMP_FORMAT, "s",
                             error_is_null=True)
        ok = pc.and_(ok, pc.is_valid(values))
    elif type_name == "date":
        ok = pc.fill_null(pc.match_substring_regex(text, _DATE_RE), False)
        head = pc.utf8_slice_codeunits(pc.if_else(ok, text, pa.scalar(None, pa.string())), 0, 10)
        values = pc.strptime(head, "%Y-%m-%d", "s", error_is_null=True).cast(pa.date32())
        ok = pc.and_(ok, pc.is_valid(values))
    elif type_name == "bool":
        lowered = pc.utf8_lower(text)
        ok = pc.fill_null(pc.is_in(lowered, pa.array(["true", "false", "1", "0", "t", "f"])), False)
        values = pc.is_in(lowered, pa.array(["true", "1", "t"]))
        values = pc.if_else(ok, values, pa.scalar(None, pa.bool_()))
    else:  # pragma: no cover - contracts only use the types above
        raise ValueError(type_name)
    bad = pc.and_(present, pc.invert(ok))
    values = pc.if_else(present, values, pa.scalar(None, values.type))
    return values, bad


_RULE_FOR_TYPE = {
    "timestamp": ("unparseable_timestamp", "not in the documented format YYYY-MM-DD HH:MM:SS"),
    "date": ("unparseable_date", "not in the documented format YYYY-MM-DD"),
    "int64": ("unparseable_number", "not a whole number"),
    "int32": ("unparseable_number", "not a whole number in range"),
    "float64": ("unparseable_number", "not a decimal number"),
    "bool": ("unparseable_flag", "not a boolean"),
}


def type_table(raw: pa.Table, table: str) -> Typed:
    """Type the text columns of ``raw`` against the contract of ``table`` (all columns but ``ds``)."""
    n = raw.num_rows
    bad_rule = pa.nulls(n, pa.string())
    bad_detail = pa.nulls(n, pa.string())
    if "_bad_encoding" in raw.column_names:
        enc = pc.fill_null(raw.column("_bad_encoding").combine_chunks(), False)
        bad_rule = pc.if_else(enc, pa.scalar("invalid_encoding"), bad_rule)
        bad_detail = pc.if_else(enc, pa.scalar("a text value is not valid UTF-8"), bad_detail)
    if "_reader_rule" in raw.column_names:  # a reader's own finding (e.g. a derived value it could not compute)
        rr = raw.column("_reader_rule").combine_chunks()
        newly = pc.and_(pc.is_valid(rr), pc.is_null(bad_rule))
        bad_rule = pc.if_else(newly, rr, bad_rule)
        bad_detail = pc.if_else(newly, raw.column("_reader_detail").combine_chunks(), bad_detail)
    columns = {}
    for col in contract(table).columns:
        if col.name == "ds":
            continue
        if col.name not in raw.column_names:
            columns[col.name] = pa.nulls(n, col.arrow_type)
            continue
        values, bad = _parse(raw.column(col.name), col.type)
        columns[col.name] = values
        if col.type in _RULE_FOR_TYPE:
            rule_name, why = _RULE_FOR_TYPE[col.type]
            newly = pc.and_(bad, pc.is_null(bad_rule))
            bad_rule = pc.if_else(newly, pa.scalar(rule_name), bad_rule)
            bad_detail = pc.if_else(newly, pa.scalar(f"column {col.name}: {why}"), bad_detail)
    typed = pa.table(columns)
    return Typed(typed, bad_rule, bad_detail)


# --- day assignment ------------------------------------------------------------------------------
def _day(ts: pa.Array, day_shift: int) -> pa.Array:
    """Run day of a timestamp (source date minus the configured shift)."""
    days = ts.cast(pa.date32())
    if day_shift:
        days = pc.subtract(days.cast(pa.int32()), day_shift).cast(pa.date32())
    return days


def _lookup_day(keys: pa.Array, key_table: pa.Table, key: str) -> pa.Array:
    """Day of each key through ``key_table`` (key, day)."""
    idx = pc.index_in(keys, value_set=key_table.column(key).combine_chunks())
    return pc.take(key_table.column("day").combine_chunks(), idx)


def _in_range(days: pa.Array, start: date, end: date) -> pa.Array:
    return pc.fill_null(
        pc.and_(pc.greater_equal(days, pa.scalar(start, pa.date32())), pc.less_equal(days, pa.scalar(end, pa.date32()))),
        False,
    )


def _record_keys(raw: pa.Table, table: str) -> pa.Array:
    key_cols = list(contract(table).primary_key)
    parts = [pc.fill_null(raw.column(c).combine_chunks().cast(pa.string()), "") for c in key_cols if c in raw.column_names]
    if not parts:
        return pa.nulls(raw.num_rows, pa.string())
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "|")


def _rejects(raw: pa.Table, table: str, typed: Typed, mask: pa.Array, days: pa.Array) -> pa.Table:
    picked = raw.filter(mask)
    # note text may be what set the row aside (or carry identifiers): the payload keeps only its hash
    payload_rows = redact_free_text(table, picked.drop_columns([c for c in picked.column_names if c.startswith("_")]))
    payload_rows = payload_rows.to_pylist()
    return pa.table(
        {
            "ds": days.filter(mask),
            "source_table": pa.array([table] * picked.num_rows, pa.string()),
            "record_key": _record_keys(picked, table),
            "rule": typed.bad_rule.filter(mask),
            "detail": typed.bad_detail.filter(mask),
            "payload": pa.array([json.dumps(r, ensure_ascii=False, default=str) for r in payload_rows], pa.string()),
            "run_id": pa.array([""] * picked.num_rows, pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )


def _split(raw: pa.Table, table: str, typed: Typed, days: pa.Array, start: date, end: date,
           unattributed: dict[str, int]) -> tuple[pa.Table, pa.Table]:
    """(typed rows of the range, set-aside rows of the range)."""
    in_range = _in_range(days, start, end)
    is_bad = pc.is_valid(typed.bad_rule)
    good = pc.and_(in_range, pc.invert(is_bad))
    bad = pc.and_(in_range, is_bad)
    unattributed[table] = int(pc.sum(pc.is_null(days)).as_py() or 0)
    rows = typed.table.filter(good).append_column("ds", days.filter(good))
    rows = rows.select(arrow_schema(table).names).cast(arrow_schema(table))
    return rows, _rejects(raw, table, typed, bad, days)


def extract_range(reader: SourceReader, ds_start: date, ds_end: date | None = None, *, day_shift: int = 0) -> ExtractResult:
    """Extract every canonical table for the days ``ds_start``..``ds_end`` (inclusive)."""
    ds_end = ds_end or ds_start
    if ds_end < ds_start:
        raise ValueError(f"ds_end {ds_end} is before ds_start {ds_start}")
    tables: dict[str, pa.Table] = {}
    rejects: list[pa.Table] = []
    unattributed: dict[str, int] = {}

    # admissions decide the day of everything that hangs off them
    adm_raw = reader.read("admissions")
    adm = type_table(adm_raw, "admissions")
    adm_days = pc.coalesce(_day(adm.table.column("dischtime"), day_shift), _day(adm.table.column("admittime"), day_shift))
    tables["admissions"], adm_rej = _split(adm_raw, "admissions", adm, adm_days, ds_start, ds_end, unattributed)
    rejects.append(adm_rej)
    hadm_day = pa.table({"hadm_id": adm.table.column("hadm_id"), "day": adm_days}).filter(
        pc.is_valid(adm.table.column("hadm_id"))
    )
    end_of_range = pa.scalar(
        np.datetime64(ds_end + timedelta(days=1 + day_shift), "s"), pa.timestamp("s")
    )
    admitted = pc.fill_null(pc.less(adm.table.column("admittime"), end_of_range), False)
    open_now = pc.and_(admitted, pc.fill_null(pc.greater_equal(adm.table.column("dischtime"), end_of_range), True))
    open_admissions = adm.table.select(["hadm_id", "subject_id", "admittime", "dischtime"]).filter(
        pc.and_(open_now, pc.is_null(adm.bad_rule))
    )

    for name in ("diagnoses", "prescriptions"):
        raw = reader.read(name)
        typed = type_table(raw, name)
        days = _lookup_day(typed.table.column("hadm_id"), hadm_day, "hadm_id")
        if name == "prescriptions":
            days = pc.coalesce(days, _day(typed.table.column("starttime"), day_shift))
        tables[name], rej = _split(raw, name, typed, days, ds_start, ds_end, unattributed)
        rejects.append(rej)

    for name in ("labs", "notes"):
        raw = reader.read(name)
        typed = type_table(raw, name)
        days = pc.coalesce(
            _day(typed.table.column("charttime"), day_shift),
            _lookup_day(typed.table.column("hadm_id"), hadm_day, "hadm_id"),
        )
        tables[name], rej = _split(raw, name, typed, days, ds_start, ds_end, unattributed)
        rejects.append(rej)

    # patients: one row per patient and day of an admission in range (set-aside admissions included,
    # so that their patient is still checked and loaded)
    pat_raw = reader.read("patients")
    pat = type_table(pat_raw, "patients")
    adm_in_range = _in_range(adm_days, ds_start, ds_end)
    wanted = (
        pa.table({"subject_id": adm.table.column("subject_id"), "day": adm_days})
        .filter(pc.and_(adm_in_range, pc.is_valid(adm.table.column("subject_id"))))
        .group_by(["subject_id", "day"])
        .aggregate([])
    )
    if ds_end > ds_start:
        # a bulk range keeps one row per patient, on the last day of the range they are referenced
        wanted = wanted.group_by("subject_id").aggregate([("day", "max")]).rename_columns(["subject_id", "day"])
    pat_index = pa.table({"subject_id": pat.table.column("subject_id"), "row": pa.array(np.arange(pat_raw.num_rows))})
    joined = wanted.join(pat_index, "subject_id", join_type="inner")
    rows = joined.column("row").combine_chunks()
    pat_sel = Typed(pat.table.take(rows), pat.bad_rule.take(rows), pat.bad_detail.take(rows))
    tables["patients"], pat_rej = _split(
        pat_raw.take(rows), "patients", pat_sel, joined.column("day").combine_chunks(), ds_start, ds_end, {}
    )
    rejects.append(pat_rej)
    unattributed["patients"] = 0

    tables = {name: tables[name] for name in INPUT_TABLES}
    result = ExtractResult(ds_start, ds_end, tables, pa.concat_tables(rejects), open_admissions, unattributed)
    for name, counts in result.counts().items():
        log.info("extracted", extra={"table": name, "ds_start": str(ds_start), "ds_end": str(ds_end), **counts})
    return result


def empty_tables() -> Mapping[str, pa.Table]:
    return {name: arrow_schema(name).empty_table() for name in INPUT_TABLES}
