-- ehr.prescriptions: Canonical input table: medication orders of the day's admissions.
-- Columns follow schemas/tables/prescriptions.yaml. No primary key in DuckDB: its index checks
-- reject a delete and re-insert of the same key inside one transaction, which is how a day is replaced;
-- validation guarantees the keys instead.
CREATE TABLE IF NOT EXISTS ehr.prescriptions (
    prescription_id BIGINT NOT NULL,
    subject_id BIGINT NOT NULL,
    hadm_id BIGINT NOT NULL,
    starttime TIMESTAMP,
    stoptime TIMESTAMP,
    drug_type VARCHAR,
    drug VARCHAR NOT NULL,
    ndc VARCHAR,
    prod_strength VARCHAR,
    dose_val_rx VARCHAR,
    dose_unit_rx VARCHAR,
    route VARCHAR,
    ds DATE NOT NULL
);
