-- ehr.patients: Canonical input table: one row per patient referenced by the day's admissions.
-- Columns follow schemas/tables/patients.yaml. No primary key in DuckDB: its index checks
-- reject a delete and re-insert of the same key inside one transaction, which is how a day is replaced;
-- validation guarantees the keys instead.
CREATE TABLE IF NOT EXISTS ehr.patients (
    subject_id BIGINT NOT NULL,
    gender VARCHAR NOT NULL,
    anchor_age INTEGER NOT NULL,
    anchor_year INTEGER NOT NULL,
    anchor_year_group VARCHAR,
    dod DATE,
    ds DATE NOT NULL
);
