"""pipeline_runs on both warehouses: a stage's rows for a day replace all of its earlier rows for that day.

The validate stage writes one row per table on success but a single ``all`` row when it fails outright;
a failed rerun must not leave the earlier per-table successes standing (the data-quality view would
still show the day as passed).
"""

from __future__ import annotations

from datetime import date, datetime

import pyarrow as pa
import pytest

from pipeline.contracts import arrow_schema

DAY, OTHER_DAY = date(2026, 1, 2), date(2026, 1, 3)


def _runs(ds: date, stage: str, tables: list[str], status: str, run_id: str) -> pa.Table:
    return pa.Table.from_pylist([
        {"run_id": run_id, "ds": ds, "stage": stage, "table_name": table, "status": status,
         "started_at": datetime(2026, 1, 3, 1), "finished_at": datetime(2026, 1, 3, 1, 5),
         "rows_in": 3, "rows_out": 3, "rows_quarantined": 0, "detail": None}
        for table in tables
    ], schema=arrow_schema("pipeline_runs"))


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request, tmp_path):
    if request.param == "duckdb":
        from pipeline.warehouse.duckdb import DuckDBWarehouse

        wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    else:
        from pipeline.warehouse.postgres import PostgresWarehouse

        wh = PostgresWarehouse(request.getfixturevalue("pg_url"))
        wh.execute_script("TRUNCATE ehr.pipeline_runs")
    try:
        yield wh
    finally:
        wh.close()


def test_run_records_failed_rerun_replaces_every_earlier_row_of_the_stage_and_day(warehouse):
    tables = ["patients", "admissions", "notes"]
    warehouse.record_runs(_runs(DAY, "validate", tables, "success", "run-1"))
    warehouse.record_runs(_runs(DAY, "extract", tables, "success", "run-1"))
    warehouse.record_runs(_runs(OTHER_DAY, "validate", tables, "success", "run-0"))

    warehouse.record_runs(_runs(DAY, "validate", ["all"], "failed", "run-2"))

    rows = warehouse.query("SELECT ds, stage, table_name, status, run_id FROM ehr.pipeline_runs "
                           "ORDER BY ds, stage, table_name").to_pylist()
    day_validate = [(r["table_name"], r["status"], r["run_id"]) for r in rows
                    if r["ds"] == DAY and r["stage"] == "validate"]
    assert day_validate == [("all", "failed", "run-2")]
    # other stages of the day and other days are untouched
    assert sum(1 for r in rows if r["ds"] == DAY and r["stage"] == "extract" and r["run_id"] == "run-1") == 3
    assert sum(1 for r in rows if r["ds"] == OTHER_DAY and r["status"] == "success") == 3

    # and a successful rerun replaces the failure row
    warehouse.record_runs(_runs(DAY, "validate", tables, "success", "run-3"))
    statuses = warehouse.query("SELECT table_name, status FROM ehr.pipeline_runs WHERE ds = ? AND stage = 'validate' "
                               "ORDER BY table_name", [DAY]).to_pylist()
    assert statuses == [{"table_name": t, "status": "success"} for t in sorted(tables)]
