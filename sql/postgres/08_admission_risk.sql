-- ehr.admission_risk: Output table: one row per admission discharged on ds.
-- Columns follow schemas/tables/admission_risk.yaml.
CREATE TABLE IF NOT EXISTS ehr.admission_risk (
    hadm_id bigint NOT NULL,
    subject_id bigint NOT NULL,
    ds date NOT NULL,
    charlson_index integer NOT NULL,
    elixhauser_vw integer NOT NULL,
    lace_score integer NOT NULL,
    readmit_30d_prob double precision NOT NULL,
    mortality_prob double precision NOT NULL,
    risk_band text NOT NULL,
    top_factors text NOT NULL,
    model_name text NOT NULL,
    model_version text NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (hadm_id)
);
CREATE INDEX IF NOT EXISTS admission_risk_ds_idx ON ehr.admission_risk (ds);
CREATE INDEX IF NOT EXISTS admission_risk_subject_id_idx ON ehr.admission_risk (subject_id);
