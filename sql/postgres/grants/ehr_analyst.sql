-- Read-only analyst role (contract: ehr_analyst).
-- A NOLOGIN group role: analysts log in with their own roles and are made members of it
-- (GRANT ehr_analyst TO alice). Members may read every table and view of schema ehr, including
-- ones created later by the role that runs this script (the pipeline's owner role), and write nothing.
-- Applied by `ehr-pipeline grant-analyst` (pipeline.warehouse.grants.grant_analyst_role), which
-- substitutes {role}; rerunnable. Kept out of the schema DDL on purpose: creating roles needs
-- CREATEROLE, which the nightly load must not need.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
        CREATE ROLE {role} NOLOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {role}', current_database());
END
$$;
GRANT USAGE ON SCHEMA ehr TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA ehr TO {role};
ALTER DEFAULT PRIVILEGES IN SCHEMA ehr GRANT SELECT ON TABLES TO {role};
