"""Derived columns: values the suites check but no source column holds, computed vectorised in Arrow.

Suites refer to them by name (all start with ``_``); only the ones a suite mentions are computed.
They are how dynamic sets reach Great Expectations without shipping a warehouse's worth of ids
as suite parameters: a reference lookup becomes a status column, e.g. ``_admission_ref``, and the
rule is an ordinary expectation on it (``expect_column_values_to_not_be_null`` = reference known).

=========================  ===================================================================
``_ds_text``               ds as ISO text (checked against the ``run_ds`` suite parameter)
``_subject_ref``           ``batch`` | ``known`` | ``quarantined`` | null (unknown subject_id)
``_admission_ref``         ``none`` (hadm_id null) | ``batch`` | ``known`` | ``quarantined`` | null
``_los_hours``             (dischtime - admittime) in hours
``_death_limit``           dischtime + ``death_after_discharge_hours``
``_window_start/_end``     the note window around the note's admission (``note_window_days``)
``_valuenum_finite``       is_finite(valuenum); null when valuenum is null
``_text_chars``            characters of note text
``_text_nonblank_chars``   characters of note text after trimming whitespace
``_phi_entities``          PHI evidence in the row's free text: types, counts, offsets, scores (no text), or null
``_duplicate``             by the table's primary key (its contract): ``repeat`` for the second and later
                           copies of a row identical in every column, ``conflict`` for every row of a key
                           carried by rows that differ, null otherwise (a row with a null key part: null)
=========================  ===================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contracts import TIMESTAMP_TYPE, free_text_columns
from pipeline.validate.config import ValidationConfig
from pipeline.validate.phi import load_phi_scanner


@dataclass
class References:
    """What other tables tell about this one's keys, as Arrow arrays (no nulls)."""

    batch_subject_ids: pa.Array  # patients of this batch that passed
    known_subject_ids: pa.Array
    quarantined_subject_ids: pa.Array  # patients of this batch quarantined (incl. by the extractor)
    batch_hadm_ids: pa.Array  # admissions of this batch that passed
    known_hadm_ids: pa.Array
    quarantined_hadm_ids: pa.Array
    admission_times: pa.Table  # hadm_id, admittime, dischtime: this batch first, then known
    parent_rules: dict[str, pa.Table]  # parent table -> (key, rule) of its quarantined rows


@dataclass
class DerivationContext:
    ds: date
    config: ValidationConfig
    references: References
    ds_range_start: date | None = None  # set for a bulk batch of several days ending at ds
    table: str | None = None  # the canonical table being validated (its contract: primary key, free text)


Builder = Callable[[pa.Table, DerivationContext], pa.Array]


def _timestamps(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``column`` in the contracts' timestamp type (arithmetic needs both sides in one unit)."""
    return pc.cast(column, TIMESTAMP_TYPE)


def _status(values: pa.ChunkedArray, ordered: list[tuple[str, pa.Array]], null_label: str | None) -> pa.Array:
    """Label each value by the first set (in priority order) that contains it; null when in none."""
    result = pa.nulls(len(values), pa.string())
    for label, members in reversed(ordered):
        hit = pc.fill_null(pc.is_in(values, value_set=members), False)
        result = pc.if_else(hit, pa.scalar(label), result)
    if null_label is not None:
        result = pc.if_else(pc.is_null(values), pa.scalar(null_label), result)
    return pa.array(result) if isinstance(result, pa.ChunkedArray) else result


def ds_text(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    return pc.cast(table["ds"], pa.string())


def subject_ref(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    refs = ctx.references
    return _status(
        table["subject_id"],
        [("quarantined", refs.quarantined_subject_ids), ("batch", refs.batch_subject_ids),
         ("known", refs.known_subject_ids)],
        null_label=None,
    )


def admission_ref(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    refs = ctx.references
    return _status(
        table["hadm_id"],
        [("quarantined", refs.quarantined_hadm_ids), ("batch", refs.batch_hadm_ids),
         ("known", refs.known_hadm_ids)],
        null_label="none",
    )


def los_hours(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    stay = pc.subtract(_timestamps(table["dischtime"]), _timestamps(table["admittime"]))
    return pc.divide(pc.cast(pc.cast(stay, pa.duration("us")), pa.int64()).cast(pa.float64()), 3_600_000_000.0)


def death_limit(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    tolerance = pa.scalar(timedelta(hours=ctx.config.death_after_discharge_hours), pa.duration("us"))
    return pc.add(_timestamps(table["dischtime"]), tolerance)


def _admission_time(table: pa.Table, ctx: DerivationContext, column: str) -> pa.Array:
    lookup = ctx.references.admission_times
    positions = pc.index_in(table["hadm_id"], value_set=lookup["hadm_id"])
    return pc.take(_timestamps(lookup[column]), positions)


def window_start(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    before = pa.scalar(timedelta(days=ctx.config.note_window_days[0]), pa.duration("us"))
    return pc.subtract(_admission_time(table, ctx, "admittime"), before)


def window_end(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    after = pa.scalar(timedelta(days=ctx.config.note_window_days[1]), pa.duration("us"))
    return pc.add(_admission_time(table, ctx, "dischtime"), after)


def valuenum_finite(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    return pc.is_finite(table["valuenum"])


def text_chars(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    return pc.utf8_length(table["text"])


def text_nonblank_chars(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    return pc.utf8_length(pc.utf8_trim_whitespace(table["text"]))


def phi_entities(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    """Every column the table's contract marks ``free_text`` goes through the PHI gate (notes.text,
    labs.comments, ...). One column: its evidence; several: ``column=EVIDENCE`` per column with findings,
    joined by `` | ``. Each distinct value is scanned once (short free text such as lab comments repeats a lot)."""
    columns = [c for c in free_text_columns(ctx.table) if c in table.column_names] if ctx.table else ["text"]
    found: list[pa.Array] = []
    for column in columns:
        texts = table[column].combine_chunks() if isinstance(table[column], pa.ChunkedArray) else table[column]
        # Over-long texts are quarantined anyway (note_too_long); scanning them would only cost time.
        distinct = pc.unique(texts)
        too_long = pc.fill_null(pc.greater(pc.utf8_length(distinct), ctx.config.note_max_chars), False)
        scanned = load_phi_scanner(ctx.config.suites_dir).scan(distinct, skip=too_long, tagger=ctx.config.phi_tagger)
        entities = pc.take(scanned, pc.index_in(texts, value_set=distinct))
        found.append(entities if len(columns) == 1 else pc.binary_join_element_wise(column, entities, "="))
    if not found:
        return pa.nulls(table.num_rows, pa.string())
    if len(found) == 1:
        return found[0]
    return pc.binary_join_element_wise(*found, pa.scalar(" | "), null_handling="skip")


def duplicate(table: pa.Table, ctx: DerivationContext) -> pa.Array:
    """Repeated rows vs conflicting rows of one key (see the module docstring)."""
    from pipeline.contracts import contract

    if ctx.table is None:
        raise ValueError("_duplicate needs the table's name (DerivationContext.table)")
    key = list(contract(ctx.table).primary_key)
    n = table.num_rows
    if not key or n == 0:
        return pa.nulls(n, pa.string())

    def text(column: str) -> pa.Array:
        values = table[column]
        values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        # a marker no value holds stands for null, so null and "" differ
        return pc.fill_null(pc.cast(values, pa.string()), "\x00")

    columns = [c for c in table.column_names if not c.startswith("_")]
    frame = pa.table({
        "_pos": pa.array(np.arange(n, dtype=np.int64)),
        "_key": pc.binary_join_element_wise(*[text(c) for c in key], "\x1f"),
        "_row": pc.binary_join_element_wise(*[text(c) for c in columns], "\x1f"),
    })
    keyed = pc.is_valid(table[key[0]])
    for column in key[1:]:
        keyed = pc.and_(keyed, pc.is_valid(table[column]))
    frame = frame.filter(keyed).combine_chunks()
    groups = frame.group_by("_key").aggregate([("_row", "count_distinct"), ("_pos", "min")])
    conflict_keys = groups.filter(pc.greater(groups["_row_count_distinct"], 1))["_key"]
    first_of_key = groups["_pos_min"]
    is_conflict = pc.is_in(frame["_key"], value_set=conflict_keys.combine_chunks())
    is_repeat = pc.and_(pc.invert(is_conflict), pc.invert(pc.is_in(frame["_pos"], value_set=first_of_key.combine_chunks())))
    codes = np.zeros(n, dtype=np.int64)  # 0: null, 1: repeat, 2: conflict
    codes[frame["_pos"].to_numpy()] = (np.asarray(is_repeat.to_numpy(zero_copy_only=False), dtype=np.int64)
                                       + 2 * np.asarray(is_conflict.to_numpy(zero_copy_only=False), dtype=np.int64))
    return pc.take(pa.array([None, "repeat", "conflict"], pa.string()), pa.array(codes))


BUILDERS: dict[str, Builder] = {
    "_ds_text": ds_text,
    "_subject_ref": subject_ref,
    "_admission_ref": admission_ref,
    "_los_hours": los_hours,
    "_death_limit": death_limit,
    "_window_start": window_start,
    "_window_end": window_end,
    "_valuenum_finite": valuenum_finite,
    "_text_chars": text_chars,
    "_text_nonblank_chars": text_nonblank_chars,
    "_phi_entities": phi_entities,
    "_duplicate": duplicate,
}


def add_derived(table: pa.Table, names: set[str], ctx: DerivationContext) -> pa.Table:
    """``table`` plus the derived columns named in ``names`` (unknown ``_`` names raise KeyError)."""
    for name in sorted(n for n in names if n.startswith("_") and n not in table.column_names):
        if name not in BUILDERS:
            raise KeyError(f"suite refers to unknown derived column {name!r}; known: {sorted(BUILDERS)}")
        values = BUILDERS[name](table, ctx)
        table = table.append_column(name, values)
    return table
