-- ehr.quarantine: Output table: rows set aside by extraction or validation, with the rule that set them aside.
-- Columns follow schemas/tables/quarantine.yaml. No primary key in DuckDB: its index checks
-- reject a delete and re-insert of the same key inside one transaction, which is how a day is replaced;
-- validation guarantees the keys instead.
CREATE TABLE IF NOT EXISTS ehr.quarantine (
    ds DATE NOT NULL,
    source_table VARCHAR NOT NULL,
    record_key VARCHAR,
    rule VARCHAR NOT NULL,
    detail VARCHAR,
    payload VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL
);
