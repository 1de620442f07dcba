-- ehr.admissions: Canonical input table: one row per hospital admission, assigned to the day of its discharge.
-- Columns follow schemas/tables/admissions.yaml.
CREATE TABLE IF NOT EXISTS ehr.admissions (
    subject_id bigint NOT NULL,
    hadm_id bigint NOT NULL,
    admittime timestamp NOT NULL,
    dischtime timestamp NOT NULL,
    deathtime timestamp,
    admission_type text NOT NULL,
    admission_location text,
    discharge_location text,
    insurance text,
    language text,
    marital_status text,
    race text,
    edregtime timestamp,
    edouttime timestamp,
    hospital_expire_flag integer,
    ds date NOT NULL,
    PRIMARY KEY (hadm_id)
);
CREATE INDEX IF NOT EXISTS admissions_ds_idx ON ehr.admissions (ds);
CREATE INDEX IF NOT EXISTS admissions_subject_id_idx ON ehr.admissions (subject_id);
