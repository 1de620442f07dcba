-- ehr.note_entities: Output table: clinical entities found in notes, with assertion flags and section.
-- Columns follow schemas/tables/note_entities.yaml.
-- LIST-partitioned by ds, one partition per day (ehr.note_entities_YYYYMMDD), see 04_labs.sql.
-- note_id sorts bytewise (COLLATE "C", as in ehr.notes): the key builds much faster.
CREATE TABLE IF NOT EXISTS ehr.note_entities (
    note_id text COLLATE "C" NOT NULL,
    subject_id bigint NOT NULL,
    hadm_id bigint,
    ds date NOT NULL,
    label text NOT NULL,
    text text NOT NULL,
    start_char integer NOT NULL,
    end_char integer NOT NULL,
    section text,
    score double precision,
    is_negated boolean NOT NULL,
    is_uncertain boolean NOT NULL,
    is_historical boolean NOT NULL,
    is_family boolean NOT NULL,
    is_hypothetical boolean NOT NULL,
    model_name text NOT NULL,
    model_version text NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (note_id, start_char, end_char, label, ds)
) PARTITION BY LIST (ds);
CREATE INDEX IF NOT EXISTS note_entities_hadm_id_idx ON ehr.note_entities (hadm_id);
