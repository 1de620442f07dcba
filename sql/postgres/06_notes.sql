-- ehr.notes: Canonical input table: clinical notes charted on the day (MIMIC-IV-Note discharge; MIMIC-III NOTEEVENTS).
-- Columns follow schemas/tables/notes.yaml.
CREATE TABLE IF NOT EXISTS ehr.notes (
    note_id text NOT NULL,
    subject_id bigint NOT NULL,
    hadm_id bigint,
    note_type text,
    note_seq integer,
    charttime timestamp NOT NULL,
    storetime timestamp,
    text text,
    ds date NOT NULL,
    PRIMARY KEY (note_id)
);
CREATE INDEX IF NOT EXISTS notes_ds_idx ON ehr.notes (ds);
CREATE INDEX IF NOT EXISTS notes_hadm_id_idx ON ehr.notes (hadm_id);
