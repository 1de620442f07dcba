#!/bin/sh
# Creates the airflow and ehr databases (see 01-databases.sql) with passwords from the environment.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v airflow_password="${AIRFLOW_DB_PASSWORD:-airflow}" -v ehr_password="${EHR_DB_PASSWORD:-ehr}" \
  -f /docker-entrypoint-initdb.d/01-databases.sql.in
