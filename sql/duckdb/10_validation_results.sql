-- ehr.validation_results: Output table: the outcome of every expectation for every table and day.
-- Columns follow schemas/tables/validation_results.yaml. No primary key in DuckDB: its index checks
-- reject a delete and re-insert of the same key inside one transaction, which is how a day is replaced;
-- validation guarantees the keys instead.
CREATE TABLE IF NOT EXISTS ehr.validation_results (
    ds DATE NOT NULL,
    table_name VARCHAR NOT NULL,
    expectation VARCHAR NOT NULL,
    success BOOLEAN NOT NULL,
    unexpected_count BIGINT,
    unexpected_percent DOUBLE,
    run_id VARCHAR NOT NULL
);
