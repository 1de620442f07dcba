-- ehr.pipeline_runs: Output table: one row per stage, table and day (the latest run of it); rows_in = rows_out + rows_quarantined.
-- Columns follow schemas/tables/pipeline_runs.yaml.
CREATE TABLE IF NOT EXISTS ehr.pipeline_runs (
    run_id text NOT NULL,
    ds date NOT NULL,
    stage text NOT NULL,
    table_name text NOT NULL,
    status text NOT NULL,
    started_at timestamp NOT NULL,
    finished_at timestamp,
    rows_in bigint,
    rows_out bigint,
    rows_quarantined bigint,
    detail text,
    PRIMARY KEY (ds, stage, table_name)
);
