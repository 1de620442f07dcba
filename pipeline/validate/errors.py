"""Errors of the validation stage: one place, each message with a code and what to do."""

from __future__ import annotations

from typing import NamedTuple


class Messages:
    """Message templates (``str.format``); codes are stable, texts may improve."""

    E101_MISSING_COLUMN = (
        "E101 table={table} expectation=pipeline:expect_column_to_exist: missing column(s) {columns} "
        "({missing} of {total} contract columns absent). Fix the extractor or schemas/tables/{table}.yaml."
    )
    E102_WRONG_TYPE = (
        "E102 table={table} expectation=pipeline:expect_column_values_to_be_of_type: {details}. "
        "Cast to the canonical type in the extractor."
    )
    E103_QUARANTINE_SHARE = (
        "E103 table={table} expectation=pipeline:expect_quarantine_share_to_be_at_most: {quarantined} of "
        "{rows_in} rows quarantined ({share:.1%}) > max {limit:.1%}. Inspect ehr.quarantine for ds={ds}."
    )
    E104_VOLUME = (
        "E104 table={table} expectation=pipeline:expect_row_count_near_trailing_median: {rows} rows passed, "
        "trailing median {median:g} over {days} days, allowed [{low:g}, {high:g}] (factor {factor:g}). "
        "Check the source extract for ds={ds}."
    )
    E105_BATCH_EXPECTATION = (
        "E105 table={table} expectation={expectation}: failed at batch level (observed {observed}). "
        "See the Data Docs of run {run_id}."
    )
    E106_EXPECTATION_ERROR = (
        "E106 table={table} expectation={expectation}: Great Expectations raised {error}. "
        "Check the suite JSON in {suites_dir}."
    )
    E107_NO_ROW_INDICES = (
        "E107 table={table} expectation={expectation}: a row-level expectation returned no row indices; "
        "use a column/pair/multicolumn map expectation or set meta.level to 'batch'."
    )
    W101_EMPTY_DAY = (
        "W101 ds={ds}: no records at all in any input table, so the volume check against the trailing median "
        "is reported as a warning, not a failure (tables: {tables}). A day without activity loads zero rows; "
        "if the source had not been delivered yet, rerun this ds when it is (empty_day='fail' to stop instead)."
    )
    E201_CONSERVATION = (
        "E201 table={table}: rows_in {rows_in} != rows_passed {rows_passed} + rows_quarantined "
        "{rows_quarantined}. This is a bug in pipeline.validate; do not load this ds."
    )
    E202_UNKNOWN_TABLE = (
        "E202 table={table} has no contract in {tables_dir}; pass only canonical input tables."
    )
    E203_BAD_SUITE = "E203 suite {path}: {problem}. Each expectation needs meta.rule and meta.level row|batch."


class BatchFailure(NamedTuple):
    """One failed batch-level check."""

    table: str
    expectation: str
    message: str


class BatchValidationError(Exception):
    """A batch-level check failed and ``on_batch_failure`` is ``"fail"``.

    ``failures`` holds every failed check of the batch; the message lists them all.
    """

    def __init__(self, message: str, failures: list[BatchFailure] | None = None) -> None:
        super().__init__(message)
        self.failures = list(failures or [])


class ConservationError(AssertionError):
    """rows_in != rows_passed + rows_quarantined for some table: a bug, never data."""
