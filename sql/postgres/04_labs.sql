-- ehr.labs: Canonical input table: lab results charted on the day (MIMIC-IV labevents; MIMIC-III LABEVENTS with ROW_ID as id).
-- Columns follow schemas/tables/labs.yaml.
-- LIST-partitioned by ds, one partition per day (ehr.labs_YYYYMMDD): a load builds the day's partition
-- on the side and swaps it in (pipeline/warehouse/postgres.py), so keys include ds and no ds index is needed.
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
    PRIMARY KEY (labevent_id, ds)
) PARTITION BY LIST (ds);
CREATE INDEX IF NOT EXISTS labs_hadm_id_idx ON ehr.labs (hadm_id);
CREATE INDEX IF NOT EXISTS labs_subject_id_idx ON ehr.labs (subject_id);
