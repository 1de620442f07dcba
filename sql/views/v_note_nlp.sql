-- v_note_nlp: the clinical entities of ehr.note_entities as an OMOP CDM 5.4 NOTE_NLP table, one row per entity.
-- Columns and types follow the CDM 5.4 NOTE_NLP field list, in its order:
--   note_nlp_id, note_id (integers; see below), section_concept_id, snippet, "offset", lexical_variant,
--   note_nlp_concept_id, note_nlp_source_concept_id, nlp_system, nlp_date, nlp_datetime, term_exists,
--   term_temporal, term_modifiers.
-- note_id: OMOP's is an integer, ours a string; the mapping is deterministic and stable across loads:
--   MIMIC-IV note ids '<subject_id>-<kind>-<seq>' -> subject_id * 1,000,000 + kind * 100,000 + seq, with kind
--   DS (discharge) = 1, RR (radiology report) = 2, AR (radiology addendum) = 3 (seq below 100,000);
--   MIMIC-III note ids (NOTEEVENTS.ROW_ID, digits only) -> the ROW_ID itself (below 10^7, so never equal to a
--   MIMIC-IV one); any other id -> NULL (such rows are still listed; OMOP requires note_id, so map them first).
-- note_nlp_id: note_id * 100,000 + the entity's rank in its note (by start_char, end_char, label), so one
--   note's entities keep their ids whatever else is loaded (at most 99,999 entities per note).
-- Concept ids: no OMOP vocabulary is loaded, so section_concept_id, note_nlp_concept_id and
--   note_nlp_source_concept_id are 0 ("no matching concept"), as the CDM conventions ask.
-- snippet: up to 250 characters of the note around the term (60 before, 60 after), without identifiers: MIMIC
--   placeholders ([** ... **]) become ___, every digit becomes # (dates, record numbers, phone numbers,
--   ages), and runs of white space one space. lexical_variant is the term as found (ehr.note_entities.text).
-- "offset": the term's character offset in the note (0-based, as ehr.note_entities.start_char).
-- nlp_system: model name and version; nlp_date / nlp_datetime: when the NER task of the run that wrote the
--   entity started (ehr.pipeline_runs), else the note's day (ds) at midnight.
-- term_exists (varchar(1), 'Y'/'N' as in the CDM 5.4 DDL): 'N' when the term is negated, hypothetical
--   (conditional), about a family member (subject other than the patient) or uncertain; else 'Y'.
-- term_temporal: 'past' for historical mentions, else 'present'.
-- term_modifiers: negated=yes|no,subject=patient|family,certainty=certain|uncertain,conditional=true|false
-- Portable SQL (DuckDB and PostgreSQL).
CREATE OR REPLACE VIEW ehr.v_note_nlp AS
WITH ner_runs AS (
    SELECT run_id, MIN(started_at) AS started_at
    FROM ehr.pipeline_runs
    WHERE stage LIKE 'ner[%'
    GROUP BY run_id
),
entities AS (
    SELECT
        e.*,
        CASE
            WHEN e.note_id SIMILAR TO '[0-9]+-(DS|RR|AR)-[0-9]+' THEN
                CAST(split_part(e.note_id, '-', 1) AS BIGINT) * 1000000
                + CASE split_part(e.note_id, '-', 2) WHEN 'DS' THEN 1 WHEN 'RR' THEN 2 ELSE 3 END * 100000
                + CAST(split_part(e.note_id, '-', 3) AS BIGINT)
            WHEN e.note_id SIMILAR TO '[0-9]+' THEN CAST(e.note_id AS BIGINT)
        END AS omop_note_id,
        ROW_NUMBER() OVER (PARTITION BY e.note_id ORDER BY e.start_char, e.end_char, e.label) AS rank_in_note
    FROM ehr.note_entities AS e
)
SELECT
    e.omop_note_id * 100000 + e.rank_in_note AS note_nlp_id,
    e.omop_note_id AS note_id,
    0 AS section_concept_id,
    left(regexp_replace(regexp_replace(regexp_replace(
        substr(n.text, GREATEST(e.start_char - 59, 1), e.end_char - GREATEST(e.start_char - 59, 1) + 61),
        '\[\*\*[^*]*\*\*\]', '___', 'g'), '[0-9]', '#', 'g'), '\s+', ' ', 'g'), 250) AS snippet,
    CAST(e.start_char AS VARCHAR(50)) AS "offset",
    left(e.text, 250) AS lexical_variant,
    0 AS note_nlp_concept_id,
    0 AS note_nlp_source_concept_id,
    left(e.model_name || ' ' || e.model_version, 250) AS nlp_system,
    CAST(COALESCE(r.started_at, CAST(e.ds AS TIMESTAMP)) AS DATE) AS nlp_date,
    COALESCE(r.started_at, CAST(e.ds AS TIMESTAMP)) AS nlp_datetime,
    CASE WHEN e.is_negated OR e.is_hypothetical OR e.is_family OR e.is_uncertain THEN 'N' ELSE 'Y' END
        AS term_exists,
    CASE WHEN e.is_historical THEN 'past' ELSE 'present' END AS term_temporal,
    'negated=' || CASE WHEN e.is_negated THEN 'yes' ELSE 'no' END
        || ',subject=' || CASE WHEN e.is_family THEN 'family' ELSE 'patient' END
        || ',certainty=' || CASE WHEN e.is_uncertain THEN 'uncertain' ELSE 'certain' END
        || ',conditional=' || CASE WHEN e.is_hypothetical THEN 'true' ELSE 'false' END AS term_modifiers
FROM entities AS e
LEFT JOIN ehr.notes AS n
    ON n.note_id = e.note_id AND n.ds = e.ds
LEFT JOIN ner_runs AS r
    ON r.run_id = e.run_id;
