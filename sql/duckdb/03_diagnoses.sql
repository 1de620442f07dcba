-- ehr.diagnoses: Canonical input table: billed diagnoses of the day's admissions (ICD-9-CM or ICD-10-CM, codes without dots).
-- Columns follow schemas/tables/diagnoses.yaml. No primary key in DuckDB: its index checks
-- reject a delete and re-insert of the same key inside one transaction, which is how a day is replaced;
-- validation guarantees the keys instead.
CREATE TABLE IF NOT EXISTS ehr.diagnoses (
    subject_id BIGINT NOT NULL,
    hadm_id BIGINT NOT NULL,
    seq_num INTEGER NOT NULL,
    icd_code VARCHAR NOT NULL,
    icd_version INTEGER NOT NULL,
    ds DATE NOT NULL
);
