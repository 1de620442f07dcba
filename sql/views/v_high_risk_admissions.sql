-- v_high_risk_admissions: the day's high-risk discharges, with the factors that pushed each score most.
-- One row per admission discharged alive and scored in band 'high' (thresholds: EHR_RISK_BAND_MEDIUM /
-- EHR_RISK_BAND_HIGH on the calibrated 30-day readmission probability).
-- In-hospital deaths are left out: they cannot be readmitted (the readmission target excludes them). The
-- risk stage still writes them to ehr.admission_risk with their Charlson, Elixhauser and LACE indices, but
-- with risk_band 'deceased', readmit_30d_prob 0, mortality_prob 1 and top_factors '[]'; the death test is
-- repeated here on the admission itself (deathtime or hospital_expire_flag), so rows scored before that
-- rule existed are excluded too.
-- top_factors is JSON: the features that pushed the readmission probability up most, largest first:
-- [{"target": "readmit_30d", "feature", "value", "imputed", "contribution" (> 0, logit units)}, ...].
CREATE OR REPLACE VIEW ehr.v_high_risk_admissions AS
SELECT
    r.ds,
    r.hadm_id,
    r.subject_id,
    a.admittime,
    a.dischtime,
    a.admission_type,
    a.discharge_location,
    r.readmit_30d_prob,
    r.mortality_prob,
    r.lace_score,
    r.charlson_index,
    r.elixhauser_vw,
    r.top_factors,
    r.model_name,
    r.model_version
FROM ehr.admission_risk r
JOIN ehr.admissions a ON a.hadm_id = r.hadm_id AND a.ds = r.ds
WHERE r.risk_band = 'high'
  AND a.deathtime IS NULL
  AND coalesce(a.hospital_expire_flag, 0) = 0;
