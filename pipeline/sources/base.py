"""Extraction: source rows (as text) → canonical Arrow tables for one day or a range of days.

Readers stream every column as text under its canonical name, one record batch at a time; this module
types the values against the table contracts (schemas/tables/*.yaml) and keeps, batch by batch, only the
rows of the wanted days, so memory follows the days' rows, not the size of the source. A value in a
format the contract does not document (a timestamp rewritten by a spreadsheet, a number with letters or
too large for its type, bytes that are not UTF-8) is never guessed: its row is set aside with a rule and a
detail, and counted.

Which day a row belongs to (source date = run date + ``day_shift``). Each table has a deciding timestamp
and, for when that one is missing or unreadable, documented *witnesses*: other values recorded at or after
the deciding event, normally on the same day. A witness never points to an earlier day than the deciding
event, so a nightly run never files a row under a day that has already been processed:

- admissions: ``dischtime``; witnesses ``deathtime`` (an in-hospital death ends the stay), then the
  ``charttime`` of the admission's discharge note (discharge summaries are charted on the discharge day).
  ``admittime`` is never used: it precedes the discharge, so a stay with an unreadable ``dischtime`` would
  land on a day the nightly run has already done, and its notes and labs on the real day would point at an
  admission nobody had seen. A stay with no ``dischtime`` and no witness is still open: it is listed among
  the open admissions and extracted on the day it gets a discharge time.
- labs and notes: ``charttime``; witnesses ``storetime``, then their admission's day.
- diagnoses and procedures: their admission's day. prescriptions and ICU stays: their admission's day;
  when the admission is not in the source at all, ``starttime`` / ``intime`` (when the row entered the
  source).
- radiology reports are dated by their own times like other notes but never witness a discharge.

Optional modules (MIMIC-IV-Note, icu, procedures): a table whose mapping says ``if_absent: skip`` and whose
files the source lacks is extracted empty, and ``ExtractResult.absent`` says why.
- patients: those referenced by that day's admissions (one row per patient and day).

A row whose deciding timestamp is unreadable is set aside (``unparseable_timestamp``) on the witnessed day,
together with everything that hangs off it. A row that no witness can date (e.g. a lab with a mangled
``charttime``, no ``storetime`` and no admission, or a diagnosis of an admission missing from the source)
is set aside on one fixed day: the source's first day, the earliest discharge day among the admissions.
Being fixed, it is reported exactly once, by the backfill that starts the lake, and by no nightly run;
every run still counts such rows in the source (``rows_unattributed``), so none goes unnoticed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contracts import INPUT_TABLES, TIMESTAMP_TYPE, arrow_schema, conform, contract, redact_free_text

log = logging.getLogger(__name__)

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
_TIMESTAMP_RE = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
_DATE_RE = r"^\d{4}-\d{2}-\d{2}( 00:00:00)?$"
_INT_RE = r"^[+-]?\d+$"
_FLOAT_RE = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]?(?i:nan|inf|infinity)$"
_INT64_MAX_DIGITS = "9223372036854775807"
_INT64_MIN_DIGITS = "9223372036854775808"  # of -2**63

UNDATABLE_RULE = "undatable_row"
MALFORMED_RULE = "malformed_row"
QUARANTINE_SCHEMA = arrow_schema("quarantine")


class SourceError(RuntimeError):
    """The source cannot be read as documented (missing folder, file or column); the message names it."""


class SourceReader(Protocol):
    layout: str

    def batches(self, table: str) -> Iterator[pa.Table]:
        """Rows of a canonical table, in batches, as text columns with canonical names (plus ``_bad_encoding``,
        and optionally ``_reader_rule``/``_reader_detail``). At least one, possibly empty, batch."""
        ...


def absent_tables(reader: SourceReader) -> dict[str, str]:
    """The optional tables (a module such as MIMIC-IV-Note or icu) this source does not have → why.

    A reader without an ``absent`` method has every table.
    """
    check = getattr(reader, "absent", None)
    if check is None:
        return {}
    return {name: why for name in INPUT_TABLES if (why := check(name))}


def read_all(reader: SourceReader, table: str) -> pa.Table:
    """Every row of a table at once (small tables and tests; extraction streams)."""
    return pa.concat_tables(list(reader.batches(table)))


def decode_utf8(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array | None]:
    """Binary → UTF-8 text; (text, mask of values that were not UTF-8, or None when all were).

    The common case is one vectorised cast. When it fails, halving the array finds the offending values
    with a few more casts (log2 of the batch per bad value); only those are decoded one by one, with
    U+FFFD for the bad bytes, and flagged.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_string(values.type):
        return values, None
    try:
        return values.cast(pa.string()), None
    except pa.ArrowInvalid:
        pass
    bad = np.zeros(len(values), dtype=bool)

    def find(offset: int, length: int) -> None:
        piece = values.slice(offset, length)
        try:
            piece.cast(pa.string())
        except pa.ArrowInvalid:
            if length == 1:
                bad[offset] = True
                return
            half = length // 2
            find(offset, half)
            find(offset + half, length - half)

    find(0, len(values))
    mask = pa.array(bad)
    fixed = pa.array([v.decode("utf-8", errors="replace") for v in values.filter(mask).to_pylist()], pa.string())
    good_text = pc.if_else(mask, pa.scalar(None, pa.binary()), values).cast(pa.string())
    return pc.replace_with_mask(good_text, mask, fixed), mask


@dataclass
class ExtractResult:
    ds_start: date
    ds_end: date
    tables: dict[str, pa.Table]
    rejects: pa.Table  # quarantine schema, run_id empty (the task fills it)
    open_admissions: pa.Table  # hadm_id, subject_id, admittime, dischtime: admitted by ds_end, discharged later
    unattributed: dict[str, int] = field(default_factory=dict)  # rows in the source no witness dates
    not_yet_due: dict[str, int] = field(default_factory=dict)  # rows of stays not yet discharged
    undatable_day: date | None = None  # the day undated rows are reported on (the source's first day)
    absent: dict[str, str] = field(default_factory=dict)  # optional tables the source lacks → why
    malformed: dict[str, int] = field(default_factory=dict)  # rows in the source with a wrong field count

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for name, table in self.tables.items():
            rejected = int(pc.sum(pc.equal(self.rejects.column("source_table"), name)).as_py() or 0)
            out[name] = {"rows_extracted": table.num_rows + rejected, "rows_typed": table.num_rows,
                         "rows_set_aside": rejected, "rows_unattributed": self.unattributed.get(name, 0),
                         "rows_not_yet_due": self.not_yet_due.get(name, 0),
                         "rows_malformed": self.malformed.get(name, 0)}
        return out


# --- typing --------------------------------------------------------------------------------------
@dataclass
class Typed:
    table: pa.Table  # typed canonical columns (no ds yet)
    bad_rule: pa.Array  # per row: null when fine, else the rule that sets the row aside
    bad_detail: pa.Array


def _parse(column: pa.ChunkedArray | pa.Array, type_name: str) -> tuple[pa.Array, pa.Array]:
    """Parse a text column to ``type_name``; returns (typed values, mask of non-null unparseable values)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    text = pc.utf8_trim_whitespace(column)
    present = pc.fill_null(pc.and_kleene(pc.is_valid(text), pc.not_equal(text, "")), False)
    if type_name == "string":
        return column, pa.array(np.zeros(len(text), dtype=bool))
    if type_name in ("int64", "int32"):
        ok = pc.fill_null(pc.match_substring_regex(text, _INT_RE), False)
        # The pattern accepts any length, but a 20-digit id does not fit in int64 and the cast would fail
        # for the whole column: compare the digits as text (exact) and set such values aside instead.
        digits = pc.replace_substring_regex(text, r"^[+-]?0*", "")
        limit = pc.if_else(pc.fill_null(pc.starts_with(text, "-"), False), _INT64_MIN_DIGITS, _INT64_MAX_DIGITS)
        length = pc.utf8_length(digits)
        fits = pc.or_(pc.less(length, 19), pc.and_(pc.equal(length, 19), pc.less_equal(digits, limit)))
        ok = pc.and_(ok, pc.fill_null(fits, False))
        unsigned = pc.replace_substring_regex(text, r"^\+", "")  # Arrow's integer cast refuses a leading '+'
        values = pc.if_else(ok, unsigned, pa.scalar(None, pa.string())).cast(pa.int64())
        if type_name == "int32":
            in_range = pc.fill_null(
                pc.and_(pc.less_equal(values, 2**31 - 1), pc.greater_equal(values, -(2**31))), True
            )
            ok = pc.and_(ok, in_range)
            values = pc.if_else(in_range, values, pa.scalar(None, pa.int64())).cast(pa.int32())
    elif type_name == "float64":
        ok = pc.fill_null(pc.match_substring_regex(text, _FLOAT_RE), False)
        values = pc.if_else(ok, text, pa.scalar(None, pa.string())).cast(pa.float64())
    elif type_name == "timestamp":
        ok = pc.fill_null(pc.match_substring_regex(text, _TIMESTAMP_RE), False)
        values = pc.strptime(pc.if_else(ok, text, pa.scalar(None, pa.string())), TIMESTAMP_FORMAT,
                             TIMESTAMP_TYPE.unit, error_is_null=True)
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
    "int64": ("unparseable_number", "not a whole number that fits in 64 bits"),
    "int32": ("unparseable_number", "not a whole number in range"),
    "float64": ("unparseable_number", "not a decimal number"),
    "bool": ("unparseable_flag", "not a boolean"),
}


CONTROL_RULE = "control_character"
# C0 controls but tab, line feed and carriage return, and DEL. PostgreSQL's text cannot hold NUL at all and
# the others make a value look different from what it is; one rule here gives both backends the same rows.
_CONTROL_RE = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]"


def _control_characters(raw: pa.Table, table: str) -> pa.Array | None:
    """Per row: ``column <name>: ...`` naming the first column holding a control character, else null."""
    found = None
    for col in contract(table).columns:
        if col.name == "ds" or col.name not in raw.column_names:
            continue
        values = raw.column(col.name)
        if not pa.types.is_string(values.type):
            continue
        hit = pc.fill_null(pc.match_substring_regex(_array(values), _CONTROL_RE), False)
        if not _count(hit):
            continue
        why = pa.scalar(f"column {col.name}: holds a control character (NUL, or another C0 code but tab and "
                        "line ends, or DEL)")
        found = pa.nulls(raw.num_rows, pa.string()) if found is None else found
        found = pc.if_else(pc.and_(hit, pc.is_null(found)), why, found)
    return found


def type_table(raw: pa.Table, table: str) -> Typed:
    """Type the text columns of ``raw`` against the contract of ``table`` (all columns but ``ds``)."""
    n = raw.num_rows
    bad_rule = pa.nulls(n, pa.string())
    bad_detail = pa.nulls(n, pa.string())
    if "_bad_encoding" in raw.column_names:
        enc = pc.fill_null(raw.column("_bad_encoding").combine_chunks(), False)
        bad_rule = pc.if_else(enc, pa.scalar("invalid_encoding"), bad_rule)
        bad_detail = pc.if_else(enc, pa.scalar("a text value is not valid UTF-8"), bad_detail)
    control = _control_characters(raw, table)
    if control is not None:
        newly = pc.and_(pc.is_valid(control), pc.is_null(bad_rule))
        bad_rule = pc.if_else(newly, pa.scalar(CONTROL_RULE), bad_rule)
        bad_detail = pc.if_else(newly, control, bad_detail)
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


def _ts_day(raw: pa.Table, column: str, day_shift: int) -> tuple[pa.Array, pa.Array]:
    """(run day of a text timestamp column, mask of values present but unreadable)."""
    values, bad = _parse(raw.column(column), "timestamp")
    return _day(values, day_shift), bad


def _int(raw: pa.Table, column: str) -> pa.Array:
    return _parse(raw.column(column), "int64")[0]


def _in_range(days: pa.Array, start: date, end: date) -> pa.Array:
    return pc.fill_null(
        pc.and_(pc.greater_equal(days, pa.scalar(start, pa.date32())), pc.less_equal(days, pa.scalar(end, pa.date32()))),
        False,
    )


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _count(mask: pa.Array) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def _record_keys(raw: pa.Table, table: str) -> pa.Array:
    key_cols = list(contract(table).primary_key)
    parts = [pc.fill_null(raw.column(c).combine_chunks().cast(pa.string()), "") for c in key_cols if c in raw.column_names]
    if not parts:
        return pa.nulls(raw.num_rows, pa.string())
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "|")


class _Kept:
    """Rows of one table kept while streaming: raw text rows, their day, and whether no witness dated them."""

    def __init__(self) -> None:
        self._raw: list[pa.Table] = []
        self._day: list[pa.Array] = []
        self._undatable: list[pa.Array] = []
        self._schema: pa.Schema | None = None

    def add(self, raw: pa.Table, day: pa.Array, mask: pa.Array, undatable: pa.Array | None = None) -> None:
        self._schema = self._schema or raw.schema
        day, mask = _array(day), _array(mask)
        undatable = None if undatable is None else _array(undatable)
        if _count(mask):
            self._raw.append(raw.filter(mask))
            self._day.append(day.filter(mask))
            self._undatable.append(
                pa.array(np.zeros(_count(mask), dtype=bool)) if undatable is None else undatable.filter(mask)
            )

    def rows(self) -> tuple[pa.Table, pa.Array, pa.Array]:
        if not self._raw:
            empty = self._schema.empty_table() if self._schema is not None else pa.table({})
            return empty, pa.array([], pa.date32()), pa.array([], pa.bool_())
        return (pa.concat_tables(self._raw).combine_chunks(), pa.concat_arrays(self._day),
                pa.concat_arrays(self._undatable))


@dataclass
class _Admissions:
    """Every admission of the source, reduced to what decides days (one row per source row)."""

    keys: pa.Table  # hadm_id, subject_id, admittime, dischtime, own_day, disch_unreadable
    kept: _Kept  # raw rows whose own day is in range or missing (column _row: position in keys)
    day: pa.Array | None = None  # final day per row: dated, or the undatable day; null = still open
    undatable: pa.Array | None = None
    undatable_day: date | None = None

    def lookup(self, hadm_ids: pa.Array) -> tuple[pa.Array, pa.Array]:
        """(day of each hadm_id's admission, mask: the admission is in the source)."""
        idx = pc.index_in(hadm_ids, value_set=self.keys.column("hadm_id").combine_chunks(), skip_nulls=True)
        return pc.take(self.day, idx), pc.is_valid(idx)


def _scan_admissions(reader: SourceReader, start: date, end: date, day_shift: int) -> _Admissions:
    keys: list[pa.Table] = []
    kept = _Kept()
    offset = 0
    for raw in reader.batches("admissions"):
        rows = pa.array(np.arange(offset, offset + raw.num_rows), pa.int64())
        offset += raw.num_rows
        dischtime, disch_bad = _parse(raw.column("dischtime"), "timestamp")
        own_day = pc.coalesce(_day(dischtime, day_shift), _ts_day(raw, "deathtime", day_shift)[0])
        keys.append(pa.table({
            "hadm_id": _int(raw, "hadm_id"), "subject_id": _int(raw, "subject_id"),
            "admittime": _parse(raw.column("admittime"), "timestamp")[0], "dischtime": dischtime,
            "own_day": own_day, "disch_unreadable": disch_bad,
        }))
        kept.add(raw.append_column("_row", rows), own_day, pc.or_(_in_range(own_day, start, end), pc.is_null(own_day)))
    return _Admissions(pa.concat_tables(keys).combine_chunks(), kept)


def _date_admissions(adm: _Admissions, witnesses: pa.Table) -> None:
    """Final day of every admission: discharge, death, else its discharge note; fixes the undatable day."""
    own = adm.keys.column("own_day").combine_chunks()
    idx = pc.index_in(adm.keys.column("hadm_id"), value_set=witnesses.column("hadm_id").combine_chunks(),
                      skip_nulls=True)
    day = pc.coalesce(own, pc.take(witnesses.column("day").combine_chunks(), idx))
    adm.undatable_day = pc.min(day).as_py()
    # no readable discharge and no witness: an unreadable dischtime is undatable; an absent one, still open
    adm.undatable = pc.and_(pc.is_null(day), pc.fill_null(adm.keys.column("disch_unreadable").combine_chunks(), False))
    adm.day = _with_undatable_day(day, adm.undatable, adm.undatable_day)


def _with_undatable_day(day: pa.Array, undatable: pa.Array, undatable_day: date | None) -> pa.Array:
    if undatable_day is None:
        return day
    return pc.if_else(undatable, pa.scalar(undatable_day, pa.date32()), day)


def _finish(table: str, kept: _Kept, undatable_day: date | None) -> tuple[pa.Table, pa.Table]:
    """Type the kept rows of ``table`` (all in range) → (typed rows, set-aside rows)."""
    raw, days, undatable = kept.rows()
    raw = raw.drop_columns([c for c in raw.column_names if c == "_row"])
    typed = type_table(raw, table)
    rule, detail = typed.bad_rule, typed.bad_detail
    if _count(undatable):
        note = pa.scalar(f"no readable day: reported on the source's first day {undatable_day}")
        rule = pc.if_else(undatable, pc.coalesce(rule, pa.scalar(UNDATABLE_RULE)), rule)
        detail = pc.if_else(undatable, pc.coalesce(pc.binary_join_element_wise(detail, note, "; "), note), detail)
    is_bad = pc.is_valid(rule)
    good = pc.invert(is_bad)
    rows = typed.table.filter(good).append_column("ds", days.filter(good))
    # the contract's types; a null in a required column is validation's to quarantine, not a crash here
    rows = conform(rows, table, raw=True)
    return rows, _rejects(raw, table, is_bad, rule, detail, days)


def _rejects(raw: pa.Table, table: str, mask: pa.Array, rule: pa.Array, detail: pa.Array, days: pa.Array) -> pa.Table:
    picked = raw.filter(mask)
    # note text may be what set the row aside (or carry identifiers): the payload keeps only its hash
    payload_rows = redact_free_text(table, picked.drop_columns([c for c in picked.column_names if c.startswith("_")]))
    payload_rows = payload_rows.to_pylist()
    return pa.table(
        {
            "ds": days.filter(mask),
            "source_table": pa.array([table] * picked.num_rows, pa.string()),
            "record_key": _record_keys(picked, table),
            "rule": rule.filter(mask),
            "detail": detail.filter(mask),
            "payload": pa.array([json.dumps(r, ensure_ascii=False, default=str) for r in payload_rows], pa.string()),
            "run_id": pa.array([""] * picked.num_rows, pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )


@dataclass
class _Tally:
    unattributed: int = 0  # rows no witness dates (reported on the undatable day)
    not_yet_due: int = 0  # rows of stays that are still open


def _own_day(raw: pa.Table, own: Iterable[str], day_shift: int) -> pa.Array | None:
    days = [_ts_day(raw, column, day_shift)[0] for column in own if column in raw.column_names]
    return pc.coalesce(*days) if days else None


def _radiology(raw: pa.Table) -> pa.Array:
    """Radiology reports (MIMIC-IV-Note note_type RR, MIMIC-III CATEGORY Radiology): charted during the stay,
    so they never witness its discharge day."""
    kind = pc.utf8_upper(pc.utf8_trim_whitespace(raw.column("note_type").combine_chunks()))
    return pc.fill_null(pc.is_in(kind, pa.array(["RR", "RADIOLOGY"])), False)


def _date_dependants(raw: pa.Table, own_day: pa.Array | None, adm: _Admissions, day_shift: int,
                     tally: _Tally, fallback: str | None = None) -> tuple[pa.Array, pa.Array]:
    """(day, undatable mask) of rows dated by their own day, else through their admission.

    ``fallback``: a timestamp column dating rows whose admission is not in the source at all (a
    prescription's starttime, an ICU stay's intime: when the row entered the source).
    """
    adm_day, known = adm.lookup(_int(raw, "hadm_id"))
    day = adm_day if own_day is None else pc.coalesce(own_day, adm_day)
    if fallback is not None and fallback in raw.column_names:
        day = pc.if_else(known, day, pc.coalesce(day, _ts_day(raw, fallback, day_shift)[0]))
    undated = pc.is_null(day)
    tally.not_yet_due += _count(pc.and_(undated, known))  # the admission is in the source, still open
    undatable = pc.and_(undated, pc.invert(known))
    tally.unattributed += _count(undatable)
    return _with_undatable_day(day, undatable, adm.undatable_day), undatable


def _malformed_list(reader: SourceReader, table: str) -> list:
    listed = getattr(reader, "malformed_rows", None)
    return listed(table) if listed is not None else []


def _malformed(reader: SourceReader, start: date, end: date, report_day: date | None, max_share: float | None,
               min_rows: int) -> dict[str, pa.Table]:
    """Rows the reader set aside for a wrong field count, as quarantine rows of the source's first day.

    Such a row cannot be dated (which of its values is which is unknown), so like an undatable row it is
    reported once, on the source's first day; every run counts it (``rows_malformed``). A file with more
    malformed rows than ``max_share`` of its rows is refused: it is not the CSV its header says.
    """
    out: dict[str, pa.Table] = {}
    for table in INPUT_TABLES:
        rows = _malformed_list(reader, table)
        if not rows:
            continue
        read = getattr(reader, "rows_read", lambda _t: 0)(table) + len(rows)
        if max_share is not None and read >= min_rows and len(rows) / read > max_share:
            raise SourceError(
                f"{rows[0].file}: {len(rows)} of {read} rows have the wrong number of fields (more than "
                f"{max_share:.0%}; the first at record {rows[0].record}): the file is not the CSV its header says"
            )
        log.warning("malformed rows set aside", extra={"table": table, "rows": len(rows),
                                                       "first_record": rows[0].record})
        if report_day is None or not start <= report_day <= end:
            continue
        n = len(rows)
        out[table] = pa.table(
            {
                "ds": pa.array([report_day] * n, pa.date32()),
                "source_table": pa.array([table] * n, pa.string()),
                "record_key": pa.array([f"record {r.record}" for r in rows], pa.string()),
                "rule": pa.array([MALFORMED_RULE] * n, pa.string()),
                "detail": pa.array([r.detail for r in rows], pa.string()),
                # the row's values cannot be told apart, and may hold note text: none of them is kept
                "payload": pa.array([json.dumps({"file": r.file, "record": r.record, "fields": r.fields,
                                                 "expected_fields": r.expected}) for r in rows], pa.string()),
                "run_id": pa.array([""] * n, pa.string()),
            },
            schema=QUARANTINE_SCHEMA,
        )
    return out


def extract_range(reader: SourceReader, ds_start: date, ds_end: date | None = None, *, day_shift: int = 0,
                  max_malformed_share: float | None = None, min_rows_for_share: int = 20) -> ExtractResult:
    """Extract every canonical table for the days ``ds_start``..``ds_end`` (inclusive).

    ``max_malformed_share``: refuse a file in which more than this share of rows has a wrong field count.
    """
    ds_end = ds_end or ds_start
    if ds_end < ds_start:
        raise ValueError(f"ds_end {ds_end} is before ds_start {ds_start}")
    tables: dict[str, pa.Table] = {}
    rejects: list[pa.Table] = []
    tallies: dict[str, _Tally] = {}

    # 1. admissions decide the day of everything that hangs off them
    adm = _scan_admissions(reader, ds_start, ds_end, day_shift)

    # 2. notes, by their own times; those with none wait until every admission is dated. Notes with a
    #    readable time are the witnesses for admissions whose discharge time is missing or unreadable.
    undated_adm = pc.and_(pc.is_null(adm.keys.column("own_day")), pc.is_valid(adm.keys.column("hadm_id")))
    waiting = pc.unique(adm.keys.column("hadm_id").filter(undated_adm).combine_chunks())
    witness_parts: list[pa.Table] = []
    notes, notes_waiting = _Kept(), _Kept()
    for raw in reader.batches("notes"):
        own_day = _own_day(raw, ("charttime", "storetime"), day_shift)
        notes.add(raw, own_day, _in_range(own_day, ds_start, ds_end))
        notes_waiting.add(raw, own_day, pc.is_null(own_day))
        if len(waiting):
            hadm = _int(raw, "hadm_id")
            witness = pc.and_(pc.fill_null(pc.is_in(hadm, value_set=waiting), False), pc.is_valid(own_day))
            witness = pc.and_(witness, pc.invert(_radiology(raw)))
            if _count(witness):
                witness_parts.append(pa.table({"hadm_id": hadm.filter(witness), "day": own_day.filter(witness)}))
    witnesses = (
        pa.concat_tables(witness_parts).group_by("hadm_id").aggregate([("day", "max")]).rename_columns(["hadm_id", "day"])
        if witness_parts else pa.table({"hadm_id": pa.array([], pa.int64()), "day": pa.array([], pa.date32())})
    )
    _date_admissions(adm, witnesses)

    adm_raw, _, _ = adm.kept.rows()
    positions = adm_raw.column("_row").combine_chunks() if adm_raw.num_rows else pa.array([], pa.int64())
    adm_days = pc.take(adm.day, positions)
    admissions = _Kept()
    admissions.add(adm_raw, adm_days, _in_range(adm_days, ds_start, ds_end), pc.take(adm.undatable, positions))
    tallies["admissions"] = _Tally(_count(adm.undatable), _count(pc.is_null(adm.day)))
    tables["admissions"], rej = _finish("admissions", admissions, adm.undatable_day)
    rejects.append(rej)

    # 3. the tables that hang off admissions, streamed, with every admission dated
    for name, own, fallback in (("labs", ("charttime", "storetime"), None), ("diagnoses", (), None),
                                ("procedures", (), None), ("prescriptions", (), "starttime"),
                                ("icu_stays", (), "intime")):
        kept, tally = _Kept(), _Tally()
        for raw in reader.batches(name):
            day, undatable = _date_dependants(raw, _own_day(raw, own, day_shift), adm, day_shift, tally, fallback)
            kept.add(raw, day, _in_range(day, ds_start, ds_end), undatable)
        tables[name], rej = _finish(name, kept, adm.undatable_day)
        rejects.append(rej)
        tallies[name] = tally

    # 4. notes that waited for their admission's day
    waiting_raw, _, _ = notes_waiting.rows()
    tallies["notes"] = _Tally()
    day, undatable = _date_dependants(waiting_raw, None, adm, day_shift, tallies["notes"])
    notes.add(waiting_raw, day, _in_range(day, ds_start, ds_end), undatable)
    tables["notes"], rej = _finish("notes", notes, adm.undatable_day)
    rejects.append(rej)

    # 5. patients: one row per patient and day of an admission in range (set-aside admissions included,
    #    so that their patient is still checked and loaded)
    subjects = adm.keys.column("subject_id")
    wanted = (
        pa.table({"subject_id": subjects, "day": adm.day})
        .filter(pc.and_(_in_range(adm.day, ds_start, ds_end), pc.is_valid(subjects)))
        .group_by(["subject_id", "day"])
        .aggregate([])
    )
    if ds_end > ds_start:
        # a bulk range keeps one row per patient, on the last day of the range they are referenced
        wanted = wanted.group_by("subject_id").aggregate([("day", "max")]).rename_columns(["subject_id", "day"])
    patients = _Kept()
    for raw in reader.batches("patients"):
        index = pa.table({"subject_id": _int(raw, "subject_id"), "_pos": pa.array(np.arange(raw.num_rows))})
        joined = index.join(wanted, "subject_id", join_type="inner")
        picked = raw.take(joined.column("_pos").combine_chunks())
        patients.add(picked, joined.column("day").combine_chunks(), pa.array(np.ones(picked.num_rows, dtype=bool)))
    tables["patients"], rej = _finish("patients", patients, adm.undatable_day)
    rejects.append(rej)
    tallies["patients"] = _Tally()

    malformed = _malformed(reader, ds_start, ds_end, adm.undatable_day, max_malformed_share, min_rows_for_share)
    rejects.extend(malformed.values())
    undatable_rows = sum(t.unattributed for t in tallies.values())
    if undatable_rows and adm.undatable_day is None:
        raise SourceError(
            f"{undatable_rows} source row(s) have no readable day, and no admission has a readable discharge "
            "day to report them on: fix the source's timestamps"
        )
    tables = {name: tables[name] for name in INPUT_TABLES}
    result = ExtractResult(
        ds_start, ds_end, tables, pa.concat_tables(rejects), _open_admissions(adm, ds_end, day_shift),
        {name: t.unattributed for name, t in tallies.items()}, {name: t.not_yet_due for name, t in tallies.items()},
        adm.undatable_day, absent_tables(reader), {name: len(_malformed_list(reader, name)) for name in INPUT_TABLES},
    )
    for name, why in result.absent.items():
        log.warning("source table %s absent: %s", name, why)
    for name, counts in result.counts().items():
        log.info("extracted", extra={"table": name, "ds_start": str(ds_start), "ds_end": str(ds_end), **counts})
    return result


def _open_admissions(adm: _Admissions, ds_end: date, day_shift: int) -> pa.Table:
    """Admissions admitted by the end of ``ds_end`` and discharged later (or not yet, as far as the source says).

    Identity and admission time must be readable; other problems of the row (which will set it aside on
    its discharge day) do not make the stay any less open until then.
    """
    end_of_range = pa.scalar(datetime.combine(ds_end + timedelta(days=1 + day_shift), time.min), TIMESTAMP_TYPE)
    keys = adm.keys
    admitted = pc.fill_null(pc.less(keys.column("admittime"), end_of_range), False)
    later = pc.fill_null(pc.greater(adm.day, pa.scalar(ds_end, pa.date32())), True)
    identified = pc.and_(pc.is_valid(keys.column("hadm_id")), pc.is_valid(keys.column("subject_id")))
    return keys.select(["hadm_id", "subject_id", "admittime", "dischtime"]).filter(
        pc.and_(pc.and_(admitted, later), identified)
    )
