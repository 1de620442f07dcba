-- The warehouse schema (contract: ehr).
CREATE SCHEMA IF NOT EXISTS ehr;
