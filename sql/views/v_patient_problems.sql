-- v_patient_problems: problems documented for each patient as affirmed (not negated, uncertain or
-- hypothetical) and about the patient (not family history), with the latest note that mentions each.
CREATE OR REPLACE VIEW ehr.v_patient_problems AS
SELECT
    subject_id,
    lower(text) AS problem,
    count(*) AS mentions,
    max(ds) AS last_seen_ds,
    max(note_id) AS latest_note_id,
    bool_or(is_historical) AS ever_historical
FROM ehr.note_entities
WHERE label = 'PROBLEM'
  AND NOT is_negated
  AND NOT is_uncertain
  AND NOT is_hypothetical
  AND NOT is_family
GROUP BY subject_id, lower(text);
