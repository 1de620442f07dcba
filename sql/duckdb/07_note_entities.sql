-- ehr.note_entities: Output table: clinical entities found in notes, with assertion flags and section.
-- Columns follow schemas/tables/note_entities.yaml. No primary key in DuckDB: its index checks
-- reject a delete and re-insert of the same key inside one transaction, which is how a day is replaced;
-- validation guarantees the keys instead.
CREATE TABLE IF NOT EXISTS ehr.note_entities (
    note_id VARCHAR NOT NULL,
    subject_id BIGINT NOT NULL,
    hadm_id BIGINT,
    ds DATE NOT NULL,
    label VARCHAR NOT NULL,
    text VARCHAR NOT NULL,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    section VARCHAR,
    score DOUBLE,
    is_negated BOOLEAN NOT NULL,
    is_uncertain BOOLEAN NOT NULL,
    is_historical BOOLEAN NOT NULL,
    is_family BOOLEAN NOT NULL,
    is_hypothetical BOOLEAN NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL
);
