-- ehr.pipeline_runs: Output table: one row per stage, table and day (the latest run of it); rows_in = rows_out + rows_quarantined.
-- Columns follow schemas/tables/pipeline_runs.yaml. No primary key in DuckDB: its index checks
-- reject a delete and re-insert of the same key inside one transaction, which is how a day is replaced;
-- validation guarantees the keys instead.
CREATE TABLE IF NOT EXISTS ehr.pipeline_runs (
    run_id VARCHAR NOT NULL,
    ds DATE NOT NULL,
    stage VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    rows_in BIGINT,
    rows_out BIGINT,
    rows_quarantined BIGINT,
    detail VARCHAR
);
