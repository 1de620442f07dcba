-- The warehouse schema (contract: ehr), owned by the pipeline's role.
CREATE SCHEMA IF NOT EXISTS ehr;
