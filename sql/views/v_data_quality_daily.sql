-- v_data_quality_daily
-- Data quality per input table and day: expectations evaluated and passed (pass rate), rows extracted,
-- passed and quarantined, as recorded by the validate stage. One row per (table_name, ds).
-- Sources: ehr.validation_results (one row per expectation), ehr.quarantine (one row per set-aside row,
-- including rows the extractor set aside), ehr.pipeline_runs (stage = 'validate', one row per table and day).
-- Only the latest validate run of a day counts: rows of older runs are matched out by run_id.
-- Portable SQL (DuckDB and PostgreSQL).
CREATE OR REPLACE VIEW ehr.v_data_quality_daily AS
WITH validate_runs AS (
    SELECT ds, table_name, run_id, rows_in, rows_out, rows_quarantined, status
    FROM ehr.pipeline_runs
    WHERE stage = 'validate'
),
expectations AS (
    SELECT
        vr.ds,
        vr.table_name,
        COUNT(*) AS expectations_evaluated,
        SUM(CASE WHEN vr.success THEN 1 ELSE 0 END) AS expectations_passed
    FROM ehr.validation_results AS vr
    LEFT JOIN validate_runs AS r
        ON r.ds = vr.ds AND r.table_name = vr.table_name
    WHERE vr.run_id = COALESCE(r.run_id, vr.run_id)
    GROUP BY vr.ds, vr.table_name
),
quarantined AS (
    SELECT
        q.ds,
        q.source_table AS table_name,
        COUNT(*) AS rows_quarantined
    FROM ehr.quarantine AS q
    LEFT JOIN validate_runs AS r
        ON r.ds = q.ds AND r.table_name = q.source_table
    WHERE q.run_id = COALESCE(r.run_id, q.run_id)
    GROUP BY q.ds, q.source_table
),
days AS (
    SELECT ds, table_name FROM expectations
    UNION
    SELECT ds, table_name FROM quarantined
    UNION
    SELECT ds, table_name FROM validate_runs
)
SELECT
    d.table_name,
    d.ds,
    COALESCE(e.expectations_evaluated, 0) AS expectations_evaluated,
    COALESCE(e.expectations_passed, 0) AS expectations_passed,
    CAST(e.expectations_passed AS DOUBLE PRECISION)
        / NULLIF(e.expectations_evaluated, 0) AS pass_rate,
    COALESCE(q.rows_quarantined, 0) AS rows_quarantined,
    r.rows_in AS rows_extracted,
    r.rows_out AS rows_passed,
    CAST(COALESCE(q.rows_quarantined, 0) AS DOUBLE PRECISION)
        / NULLIF(r.rows_in, 0) AS quarantine_share,
    r.status AS validate_status,
    r.run_id
FROM days AS d
LEFT JOIN expectations AS e
    ON e.ds = d.ds AND e.table_name = d.table_name
LEFT JOIN quarantined AS q
    ON q.ds = d.ds AND q.table_name = d.table_name
LEFT JOIN validate_runs AS r
    ON r.ds = d.ds AND r.table_name = d.table_name;
