-- ehr.validation_results: Output table: the outcome of every expectation for every table and day.
-- Columns follow schemas/tables/validation_results.yaml.
CREATE TABLE IF NOT EXISTS ehr.validation_results (
    ds date NOT NULL,
    table_name text NOT NULL,
    expectation text NOT NULL,
    success boolean NOT NULL,
    unexpected_count bigint,
    unexpected_percent double precision,
    run_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS validation_results_ds_idx ON ehr.validation_results (ds);
CREATE INDEX IF NOT EXISTS validation_results_table_name_idx ON ehr.validation_results (table_name);
