"""The canonical keys hold on the real MIMIC-IV demo (tests/fixtures/mimic-iv-demo, ODbL): the grains are the
source's, not our generator's. Prescriptions keep every component of an order."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.contracts import contract
from pipeline.sources import open_source, read_all
from pipeline.sources.base import type_table

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "mimic-iv-demo"


def _typed(table: str) -> pa.Table:
    typed = type_table(read_all(open_source("mimic4", DEMO), table), table)
    assert pc.sum(pc.is_valid(typed.bad_rule)).as_py() in (0, None), table  # every real value is readable
    return typed.table


def _distinct(table: pa.Table, columns: list[str]) -> int:
    return table.group_by(columns).aggregate([]).num_rows


@pytest.mark.parametrize("table", ["admissions", "diagnoses", "procedures", "labs", "prescriptions", "icu_stays"])
def test_grains_keys_are_unique_and_complete_on_the_demo(table: str) -> None:
    rows = _typed(table)
    key = list(contract(table).primary_key)
    assert rows.num_rows > 0
    for column in key:
        assert rows.column(column).null_count == 0, (table, column)
    assert _distinct(rows, key) == rows.num_rows, table


def test_grains_prescriptions_are_order_components() -> None:
    rows = _typed("prescriptions")
    assert rows.num_rows == 18087
    orders = _distinct(rows, ["prescription_id"])
    assert orders == 15225  # one pharmacy_id, several components: the order id alone is not a key
    kinds = set(rows.column("drug_type").to_pylist())
    assert kinds == {"MAIN", "BASE", "ADDITIVE"}


def test_grains_diagnoses_position_alone_is_unique_on_the_demo_but_the_key_carries_the_code() -> None:
    rows = _typed("diagnoses")
    assert _distinct(rows, ["hadm_id", "seq_num"]) == rows.num_rows
    assert list(contract("diagnoses").primary_key) == ["hadm_id", "seq_num", "icd_code", "icd_version"]


def test_grains_procedure_titles_from_the_dictionary() -> None:
    rows = _typed("procedures")
    assert rows.column("long_title").null_count == 0
    first = rows.filter(pc.equal(rows.column("icd_code"), "3961")).column("long_title")[0].as_py()
    assert first == "Extracorporeal circulation auxiliary to open heart surgery"
