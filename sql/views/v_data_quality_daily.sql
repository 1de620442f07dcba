-- v_data_quality_daily
-- Data quality per input table and day: expectations evaluated and passed (pass rate), rows extracted,
-- passed and quarantined, as recorded by the validate stage. One row per (table_name, ds).
-- Sources: ehr.validation_results (one row per expectation; names starting 'pipeline:' are checks the
-- pipeline computes itself, the others Great Expectations expectations), ehr.quarantine (one row per
-- set-aside row, including rows the extractor set aside), ehr.pipeline_runs (stage = 'validate').
-- Only the latest validate run of a day counts: a rerun replaces all of the day's validate rows in
-- pipeline_runs (also when it failed), and results and quarantine rows of other runs are matched out by
-- run_id. A day whose validate run failed as a whole (one row, table_name 'all') shows validate_status
-- 'failed' on every table of the day; a failed batch still writes its results and quarantine.
-- Portable SQL (DuckDB and PostgreSQL).
CREATE OR REPLACE VIEW ehr.v_data_quality_daily AS
WITH validate_runs AS (
    SELECT ds, table_name, run_id, rows_in, rows_out, rows_quarantined, status
    FROM ehr.pipeline_runs
    WHERE stage = 'validate'
),
validate_days AS (
    -- one validate run per day (all its rows share the run_id); failed if any of its rows failed
    SELECT
        ds,
        MAX(run_id) AS run_id,
        CASE WHEN SUM(CASE WHEN status = 'success' THEN 0 ELSE 1 END) > 0 THEN 'failed' ELSE 'success' END
            AS status
    FROM validate_runs
    GROUP BY ds
),
expectations AS (
    SELECT
        vr.ds,
        vr.table_name,
        COUNT(*) AS expectations_evaluated,
        SUM(CASE WHEN vr.success THEN 1 ELSE 0 END) AS expectations_passed
    FROM ehr.validation_results AS vr
    LEFT JOIN validate_days AS d
        ON d.ds = vr.ds
    WHERE vr.run_id = COALESCE(d.run_id, vr.run_id)
    GROUP BY vr.ds, vr.table_name
),
quarantined AS (
    SELECT
        q.ds,
        q.source_table AS table_name,
        COUNT(*) AS rows_quarantined
    FROM ehr.quarantine AS q
    LEFT JOIN validate_days AS d
        ON d.ds = q.ds
    WHERE q.run_id = COALESCE(d.run_id, q.run_id)
    GROUP BY q.ds, q.source_table
),
days AS (
    SELECT ds, table_name FROM expectations
    UNION
    SELECT ds, table_name FROM quarantined
    UNION
    SELECT ds, table_name FROM validate_runs WHERE table_name <> 'all'
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
    COALESCE(r.status, vd.status) AS validate_status,
    COALESCE(r.run_id, vd.run_id) AS run_id
FROM days AS d
LEFT JOIN expectations AS e
    ON e.ds = d.ds AND e.table_name = d.table_name
LEFT JOIN quarantined AS q
    ON q.ds = d.ds AND q.table_name = d.table_name
LEFT JOIN validate_runs AS r
    ON r.ds = d.ds AND r.table_name = d.table_name
LEFT JOIN validate_days AS vd
    ON vd.ds = d.ds;
