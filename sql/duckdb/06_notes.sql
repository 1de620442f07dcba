-- ehr.notes: Canonical input table: clinical notes charted on the day (MIMIC-IV-Note discharge; MIMIC-III NOTEEVENTS).
-- Columns follow schemas/tables/notes.yaml. No primary key in DuckDB: its index checks
-- reject a delete and re-insert of the same key inside one transaction, which is how a day is replaced;
-- validation guarantees the keys instead.
CREATE TABLE IF NOT EXISTS ehr.notes (
    note_id VARCHAR NOT NULL,
    subject_id BIGINT NOT NULL,
    hadm_id BIGINT,
    note_type VARCHAR,
    note_seq INTEGER,
    charttime TIMESTAMP NOT NULL,
    storetime TIMESTAMP,
    text VARCHAR,
    ds DATE NOT NULL
);
