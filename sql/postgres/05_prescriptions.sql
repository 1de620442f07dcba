-- ehr.prescriptions: Canonical input table: medication orders of the day's admissions.
-- Columns follow schemas/tables/prescriptions.yaml.
CREATE TABLE IF NOT EXISTS ehr.prescriptions (
    prescription_id bigint NOT NULL,
    subject_id bigint NOT NULL,
    hadm_id bigint NOT NULL,
    starttime timestamp,
    stoptime timestamp,
    drug_type text,
    drug text NOT NULL,
    ndc text,
    prod_strength text,
    dose_val_rx text,
    dose_unit_rx text,
    route text,
    ds date NOT NULL,
    PRIMARY KEY (prescription_id)
);
CREATE INDEX IF NOT EXISTS prescriptions_ds_idx ON ehr.prescriptions (ds);
CREATE INDEX IF NOT EXISTS prescriptions_hadm_id_idx ON ehr.prescriptions (hadm_id);
