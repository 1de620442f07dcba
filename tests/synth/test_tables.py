"""Synthetic one-day tables for benchmarks and tests: canonical schemas, planted defects where documented."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow.compute as pc

from pipeline.contracts import arrow_schema
from pipeline.synth.tables import labs_day, note_entities_day, notes_table

DAY = dt.date(2150, 3, 14)


def test_tables_notes_table_has_the_notes_contract():
    texts = ["Denies chest pain.", None, ""]
    table = notes_table(texts, DAY, id_prefix="mem")
    assert table.schema.equals(arrow_schema("notes"))
    assert table.column("note_id").to_pylist() == ["mem-0", "mem-1", "mem-2"]
    assert table.column("text").to_pylist() == texts
    assert set(table.column("ds").to_pylist()) == {DAY}
    assert notes_table([], DAY).num_rows == 0


def test_tables_labs_day_plants_one_in_a_thousand_bad_rows():
    labs, known = labs_day(10_000, DAY, admissions=500, seed=1)
    assert labs.num_rows == 10_000 and known.num_rows == 500
    assert set(labs.column("ds").to_pylist()) == {DAY}
    non_finite = int(np.isnan(labs.column("valuenum").to_numpy(zero_copy_only=False)).sum())
    unknown = pc.sum(pc.equal(labs.column("hadm_id"), 1)).as_py() or 0
    assert non_finite == 5 and 0 < unknown <= 5  # five each; some unknown ones are outpatient (no hadm_id)
    assert labs.column("hadm_id").null_count > 1000  # ~20 % outpatient
    # every charttime falls on the day, inside the known admissions' stay
    day_start = dt.datetime.combine(DAY, dt.time())
    charttimes = labs.column("charttime")
    assert pc.min(charttimes).as_py() >= day_start
    assert pc.max(charttimes).as_py() < day_start + dt.timedelta(days=1)
    assert pc.max(known.column("admittime")).as_py() < day_start < pc.min(known.column("dischtime")).as_py()
    again = labs_day(10_000, DAY, admissions=500, seed=1)[0]
    assert labs.drop_columns(["valuenum"]).equals(again.drop_columns(["valuenum"]))  # NaN != NaN


def test_tables_note_entities_day_has_the_contract_and_exact_offsets():
    table = note_entities_day(1_000, DAY, seed=4)
    assert table.schema.equals(arrow_schema("note_entities")) and table.num_rows == 1_000
    assert set(table.column("ds").to_pylist()) == {DAY}
    lengths = pc.subtract(table.column("end_char"), table.column("start_char"))
    assert pc.all(pc.equal(lengths, pc.utf8_length(table.column("text")))).as_py()
    assert table.column("note_id").to_pylist()[:9] == ["bench-0"] * 8 + ["bench-1"]
