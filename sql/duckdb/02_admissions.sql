-- ehr.admissions: Canonical input table: one row per hospital admission, assigned to the day of its discharge.
-- Columns follow schemas/tables/admissions.yaml. No primary key in DuckDB: its index checks
-- reject a delete and re-insert of the same key inside one transaction, which is how a day is replaced;
-- validation guarantees the keys instead.
CREATE TABLE IF NOT EXISTS ehr.admissions (
    subject_id BIGINT NOT NULL,
    hadm_id BIGINT NOT NULL,
    admittime TIMESTAMP NOT NULL,
    dischtime TIMESTAMP NOT NULL,
    deathtime TIMESTAMP,
    admission_type VARCHAR NOT NULL,
    admission_location VARCHAR,
    discharge_location VARCHAR,
    insurance VARCHAR,
    language VARCHAR,
    marital_status VARCHAR,
    race VARCHAR,
    edregtime TIMESTAMP,
    edouttime TIMESTAMP,
    hospital_expire_flag INTEGER,
    ds DATE NOT NULL
);
