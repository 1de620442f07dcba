-- ehr.labs: Canonical input table: lab results charted on the day (MIMIC-IV labevents; MIMIC-III LABEVENTS with ROW_ID as id).
-- Columns follow schemas/tables/labs.yaml.
CREATE TABLE IF NOT EXISTS ehr.labs (
    labevent_id bigint NOT NULL,
    subject_id bigint NOT NULL,
    hadm_id bigint,
    specimen_id bigint,
    itemid integer NOT NULL,
    charttime timestamp NOT NULL,
    storetime timestamp,
    value text,
    valuenum double precision,
    valueuom text,
    ref_range_lower double precision,
    ref_range_upper double precision,
    flag text,
    priority text,
    comments text,
    ds date NOT NULL,
    PRIMARY KEY (labevent_id)
);
CREATE INDEX IF NOT EXISTS labs_ds_idx ON ehr.labs (ds);
CREATE INDEX IF NOT EXISTS labs_hadm_id_idx ON ehr.labs (hadm_id);
CREATE INDEX IF NOT EXISTS labs_subject_id_idx ON ehr.labs (subject_id);
