-- ehr.labs: Canonical input table: lab results charted on the day (MIMIC-IV labevents; MIMIC-III LABEVENTS with ROW_ID as id).
-- Columns follow schemas/tables/labs.yaml. No primary key in DuckDB: its index checks
-- reject a delete and re-insert of the same key inside one transaction, which is how a day is replaced;
-- validation guarantees the keys instead.
CREATE TABLE IF NOT EXISTS ehr.labs (
    labevent_id BIGINT NOT NULL,
    subject_id BIGINT NOT NULL,
    hadm_id BIGINT,
    specimen_id BIGINT,
    itemid INTEGER NOT NULL,
    charttime TIMESTAMP NOT NULL,
    storetime TIMESTAMP,
    value VARCHAR,
    valuenum DOUBLE,
    valueuom VARCHAR,
    ref_range_lower DOUBLE,
    ref_range_upper DOUBLE,
    flag VARCHAR,
    priority VARCHAR,
    comments VARCHAR,
    ds DATE NOT NULL
);
