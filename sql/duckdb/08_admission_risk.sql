-- ehr.admission_risk: Output table: one row per admission discharged on ds.
-- Columns follow schemas/tables/admission_risk.yaml. No primary key in DuckDB: its index checks
-- reject a delete and re-insert of the same key inside one transaction, which is how a day is replaced;
-- validation guarantees the keys instead.
CREATE TABLE IF NOT EXISTS ehr.admission_risk (
    hadm_id BIGINT NOT NULL,
    subject_id BIGINT NOT NULL,
    ds DATE NOT NULL,
    charlson_index INTEGER NOT NULL,
    elixhauser_vw INTEGER NOT NULL,
    lace_score INTEGER NOT NULL,
    readmit_30d_prob DOUBLE NOT NULL,
    mortality_prob DOUBLE NOT NULL,
    risk_band VARCHAR NOT NULL,
    top_factors VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL
);
