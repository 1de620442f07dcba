"""The data-quality view over validate outputs (DuckDB)."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa

from pipeline.config import SQL_DIR
from pipeline.contracts import INPUT_TABLES

from .conftest import DS, RUN_ID, lab, run

VIEW = SQL_DIR / "views" / "v_data_quality_daily.sql"


def test_views_data_quality_daily_on_duckdb(clean_rows):
    clean_rows["labs"] += [lab(7, valuenum=float("nan")), lab(8, hadm_id=999)]
    outcome = run(clean_rows)
    runs = pa.Table.from_pylist([
        {"run_id": RUN_ID, "ds": DS, "stage": "validate", "table_name": name, "status": "success",
         "started_at": datetime(2150, 3, 15, 1), "finished_at": datetime(2150, 3, 15, 1, 5),
         "rows_in": c["rows_in"], "rows_out": c["rows_passed"], "rows_quarantined": c["rows_quarantined"],
         "detail": None}
        for name, c in outcome.counts.items()
    ])
    stale = outcome.results.set_column(
        outcome.results.schema.get_field_index("run_id"), outcome.results.schema.field("run_id"),
        pa.array(["old"] * outcome.results.num_rows))
    con = duckdb.connect()
    con.execute("CREATE SCHEMA ehr")
    con.register("q", outcome.quarantine)
    con.register("vr", pa.concat_tables([outcome.results, stale]))
    con.register("pr", runs)
    for name, source in [("quarantine", "q"), ("validation_results", "vr"), ("pipeline_runs", "pr")]:
        con.execute(f"CREATE TABLE ehr.{name} AS SELECT * FROM {source}")
    con.execute(VIEW.read_text())
    rows = con.execute(
        "SELECT table_name, expectations_evaluated, expectations_passed, pass_rate, rows_quarantined, "
        "rows_extracted, rows_passed FROM ehr.v_data_quality_daily WHERE table_name = 'labs'").fetchall()
    evaluated = sum(1 for t in outcome.results["table_name"].to_pylist() if t == "labs")
    failed = 2  # _valuenum_finite and _admission_ref not-null
    assert rows == [("labs", evaluated, evaluated - failed, (evaluated - failed) / evaluated, 2, 5, 3)]
    assert con.execute("SELECT COUNT(*) FROM ehr.v_data_quality_daily").fetchone()[0] == len(INPUT_TABLES)

