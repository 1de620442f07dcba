-- v_high_risk_admissions: the day's high-risk discharges, with the factors that pushed each score most.
-- One row per admission scored in band 'high' (thresholds: EHR_RISK_BAND_MEDIUM / EHR_RISK_BAND_HIGH on the
-- calibrated 30-day readmission probability). top_factors is JSON: [{feature, value, contribution}, ...].
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
WHERE r.risk_band = 'high';
