-- ehr.quarantine: Output table: rows set aside by extraction or validation, with the rule that set them aside.
-- Columns follow schemas/tables/quarantine.yaml.
CREATE TABLE IF NOT EXISTS ehr.quarantine (
    ds date NOT NULL,
    source_table text NOT NULL,
    record_key text,
    rule text NOT NULL,
    detail text,
    payload text NOT NULL,
    run_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_ds_idx ON ehr.quarantine (ds);
CREATE INDEX IF NOT EXISTS quarantine_source_table_idx ON ehr.quarantine (source_table);
