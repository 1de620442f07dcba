-- ehr.patients: Canonical input table: one row per patient referenced by the day's admissions.
-- Columns follow schemas/tables/patients.yaml.
CREATE TABLE IF NOT EXISTS ehr.patients (
    subject_id bigint NOT NULL,
    gender text NOT NULL,
    anchor_age integer NOT NULL,
    anchor_year integer NOT NULL,
    anchor_year_group text,
    dod date,
    ds date NOT NULL,
    PRIMARY KEY (ds, subject_id)
);
CREATE INDEX IF NOT EXISTS patients_subject_id_idx ON ehr.patients (subject_id);
