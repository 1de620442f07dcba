-- ehr.diagnoses: Canonical input table: billed diagnoses of the day's admissions (ICD-9-CM or ICD-10-CM, codes without dots).
-- Columns follow schemas/tables/diagnoses.yaml.
CREATE TABLE IF NOT EXISTS ehr.diagnoses (
    subject_id bigint NOT NULL,
    hadm_id bigint NOT NULL,
    seq_num integer NOT NULL,
    icd_code text NOT NULL,
    icd_version integer NOT NULL,
    ds date NOT NULL,
    PRIMARY KEY (hadm_id, seq_num)
);
CREATE INDEX IF NOT EXISTS diagnoses_ds_idx ON ehr.diagnoses (ds);
