#!/bin/sh
# Creates the airflow and ehr databases (see 01-databases.sql.in) with passwords from the environment
# (no defaults: it stops if one is missing).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v airflow_password="${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}" \
  -v ehr_password="${EHR_DB_PASSWORD:?EHR_DB_PASSWORD is not set}" \
  -f /docker-entrypoint-initdb.d/01-databases.sql.in
