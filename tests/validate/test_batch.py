"""Batch-level checks: schema, quarantine share, volume; fail raises naming table, expectation, numbers."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.contracts import INPUT_TABLES
from pipeline.validate import BatchValidationError, ConservationError, ValidationConfig
from pipeline.validate.engine import _check_conservation

from .conftest import assert_conserved, lab, patient, quarantined, run, to_tables

FAIL = ValidationConfig(on_batch_failure="fail")


def test_batch_missing_column_fails_naming_table_and_column(clean_rows):
    tables = to_tables(clean_rows)
    tables["labs"] = tables["labs"].drop_columns(["valuenum"])
    with pytest.raises(BatchValidationError) as error:
        run(tables=tables, config=FAIL)
    message = str(error.value)
    assert "table=labs expectation=pipeline:expect_column_to_exist" in message and "valuenum" in message
    assert "1 of 16" in message
    assert error.value.outcome.counts["labs"]["rows_passed"] == 3  # outcome still attached for reporting


def test_batch_missing_column_warns_and_continues(clean_rows):
    tables = to_tables(clean_rows)
    tables["patients"] = tables["patients"].drop_columns(["gender"])
    outcome = run(tables=tables)
    assert [(f.table, f.expectation) for f in outcome.batch_failures] == [("patients", "pipeline:expect_column_to_exist")]
    # gender is required: every patient row is now missing it, and their admissions follow them
    assert set(quarantined(outcome, "patients").values()) == {"missing_required_value"}
    assert set(quarantined(outcome, "admissions").values()) == {"parent_quarantined"}
    assert_conserved(outcome)


def test_batch_wrong_type_fails(clean_rows):
    tables = to_tables(clean_rows)
    tables["patients"] = tables["patients"].set_column(
        2, pa.field("anchor_age", pa.int64()), tables["patients"]["anchor_age"].cast(pa.int64()))
    with pytest.raises(BatchValidationError, match=r"table=patients expectation=pipeline:expect_column_values_to_be_of_type"
                                                   r": anchor_age is int64, expected int32"):
        run(tables=tables, config=FAIL)


def test_batch_uncastable_type_quarantines_the_table(clean_rows):
    tables = to_tables(clean_rows)
    labs = tables["labs"]
    tables["labs"] = labs.set_column(labs.column_names.index("charttime"), "charttime",
                                     pa.array(["yesterday"] * labs.num_rows))
    outcome = run(tables=tables)
    assert set(quarantined(outcome, "labs").values()) == {"schema_mismatch"}
    assert outcome.counts["labs"] == {"rows_in": 3, "rows_passed": 0, "rows_quarantined": 3}
    assert '"charttime": "yesterday"' in outcome.quarantine["payload"][0].as_py()


def test_batch_quarantine_share_over_limit(clean_rows):
    clean_rows["labs"] = [lab(i) for i in range(1, 17)] + [lab(100 + i, valuenum=float("nan")) for i in range(4)]
    config = ValidationConfig(on_batch_failure="fail", max_quarantine_share=0.1, min_rows_for_share_check=20)
    with pytest.raises(BatchValidationError) as error:
        run(clean_rows, config=config)
    assert str(error.value).startswith(
        "E103 table=labs expectation=pipeline:expect_quarantine_share_to_be_at_most: 4 of 20 rows quarantined (20.0%) > max 10.0%")


def test_batch_quarantine_share_ignored_on_tiny_days(clean_rows):
    clean_rows["labs"] = [lab(1), lab(2, valuenum=float("nan"))]
    outcome = run(clean_rows, config=ValidationConfig(on_batch_failure="fail", min_rows_for_share_check=20))
    assert outcome.batch_failures == [] and quarantined(outcome, "labs") == {"2": "non_finite_value"}


@pytest.mark.parametrize(("trailing", "expected"), [
    ([100, 110, 90], "3 rows passed, trailing median 100 over 3 days, allowed [20, 500]"),
    ([1, 0, 0, 0, 0], None),  # median 0: no ratio
    ([1, 1], None),  # fewer than volume_min_days
    ([1, 1, 1], None),  # 3 within [0.2, 5]
    ([0.2, 0.5, 0.5], "3 rows passed, trailing median 0.5 over 3 days, allowed [0.1, 2.5]"),
])
def test_batch_volume_vs_trailing_median(clean_rows, trailing, expected):
    config = ValidationConfig(on_batch_failure="warn")
    outcome = run(clean_rows, config=config, trailing_volumes={"labs": trailing})
    messages = [f.message for f in outcome.batch_failures if f.table == "labs"]
    if expected is None:
        assert messages == []
    else:
        assert len(messages) == 1 and expected in messages[0]
        assert "table=labs expectation=pipeline:expect_row_count_near_trailing_median" in messages[0]


def test_batch_volume_failure_raises_in_fail_mode(clean_rows):
    with pytest.raises(BatchValidationError, match="table=patients expectation=pipeline:expect_row_count_near_trailing_median"):
        run(clean_rows, config=FAIL, trailing_volumes={"patients": [50, 60, 70]})


def test_batch_results_cover_every_expectation(clean_rows):
    clean_rows["patients"].append(patient(3, gender="Z"))
    outcome = run(clean_rows)
    results = outcome.results.to_pylist()
    failed = [r for r in results if not r["success"]]
    assert [(r["table_name"], r["expectation"], r["unexpected_count"]) for r in failed] == [
        ("patients", "expect_column_values_to_be_in_set(gender)", 1)]
    assert outcome.results.schema.field("unexpected_count").type == pa.int64()
    assert {r["table_name"] for r in results} == set(clean_rows)


def test_batch_conservation_mismatch_raises():
    from pipeline.validate import QUARANTINE_SCHEMA

    with pytest.raises(ConservationError, match="E201 table=labs"):
        _check_conservation({"labs": {"rows_in": 3, "rows_passed": 2, "rows_quarantined": 0}},
                            QUARANTINE_SCHEMA.empty_table())


def test_batch_empty_tables_with_schema(clean_rows):
    outcome = run({name: [] for name in clean_rows})
    assert all(c == {"rows_in": 0, "rows_passed": 0, "rows_quarantined": 0} for c in outcome.counts.values())
    assert outcome.batch_failures == []


def test_batch_data_docs_built(clean_rows, tmp_path):
    clean_rows["patients"].append(patient(3, gender="Z"))
    outcome = run(clean_rows, data_docs_dir=tmp_path / "docs")
    assert outcome.data_docs_index == tmp_path / "docs" / "index.html"
    html = outcome.data_docs_index.read_text()
    assert "ehr_patients" in html
    pages = list((tmp_path / "docs" / "validations").rglob("*.html"))
    assert len(pages) == len(INPUT_TABLES)


TRAILING = {name: [40, 50, 60] for name in INPUT_TABLES}


def test_batch_entirely_empty_day_warns_instead_of_failing_volume(clean_rows):
    outcome = run({name: [] for name in clean_rows}, config=FAIL, trailing_volumes=TRAILING)
    assert outcome.batch_failures == []
    assert outcome.warnings[0].message.startswith(
        "W101 ds=2150-03-14: no records at all in any input table, so the volume check")
    assert {w.table for w in outcome.warnings[1:]} == set(TRAILING)  # each table's numbers kept
    volume = [r for r in outcome.results.to_pylist()
              if r["expectation"] == "pipeline:expect_row_count_near_trailing_median(x5)"]
    assert len(volume) == len(INPUT_TABLES) and not any(r["success"] for r in volume)  # recorded as failed checks, not hidden


def test_batch_empty_day_can_be_made_to_fail(clean_rows):
    config = ValidationConfig(on_batch_failure="fail", empty_day="fail")
    with pytest.raises(BatchValidationError, match=r"E104 table=patients .* 0 rows passed, trailing median 50"):
        run({name: [] for name in clean_rows}, config=config, trailing_volumes=TRAILING)


def test_batch_one_empty_table_is_not_an_empty_day(clean_rows):
    clean_rows["labs"] = []
    with pytest.raises(BatchValidationError, match=r"E104 table=labs .* 0 rows passed") as error:
        run(clean_rows, config=FAIL, trailing_volumes={"labs": [40, 50, 60]})
    assert error.value.outcome.warnings == []


def test_batch_unknown_table_fails_naming_the_contracts_folder(clean_rows):
    tables = to_tables(clean_rows)
    tables["admission"] = tables.pop("admissions")
    with pytest.raises(ValueError, match=r"E202 table=admission has no contract in .*schemas/tables"):
        run(tables=tables)


def test_batch_second_timestamps_pass_as_contract_microseconds(clean_rows):
    """A lake written before timestamps were microseconds holds seconds: same values, not a wrong type."""
    tables = to_tables(clean_rows)
    admissions = tables["admissions"]
    tables["admissions"] = admissions.cast(pa.schema(
        [f.with_type(pa.timestamp("s")) if pa.types.is_timestamp(f.type) else f for f in admissions.schema]))
    outcome = run(tables=tables, config=FAIL)
    passed = outcome.passed["admissions"]
    assert passed.schema.field("dischtime").type == pa.timestamp("us")
    assert passed.column("dischtime").to_pylist() == admissions.column("dischtime").to_pylist()
    assert outcome.counts["admissions"]["rows_quarantined"] == 0
