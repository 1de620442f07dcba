-- ehr.notes: Canonical input table: clinical notes charted on the day (MIMIC-IV-Note discharge; MIMIC-III NOTEEVENTS).
-- Columns follow schemas/tables/notes.yaml.
-- LIST-partitioned by ds, one partition per day (ehr.notes_YYYYMMDD), see 04_labs.sql.
-- note_id sorts bytewise (COLLATE "C"): ids need no linguistic order, and the key builds much faster.
CREATE TABLE IF NOT EXISTS ehr.notes (
    note_id text COLLATE "C" NOT NULL,
    subject_id bigint NOT NULL,
    hadm_id bigint,
    note_type text,
    note_seq integer,
    charttime timestamp NOT NULL,
    storetime timestamp,
    text text,
    ds date NOT NULL,
    PRIMARY KEY (note_id, ds)
) PARTITION BY LIST (ds);
CREATE INDEX IF NOT EXISTS notes_hadm_id_idx ON ehr.notes (hadm_id);
