"""The read-only analyst role: a login role in the group can read ehr tables and views, write nothing."""

from __future__ import annotations

import os

import pytest

from pipeline.warehouse.base import WarehouseError
from pipeline.warehouse.grants import analyst_grants_sql, grant_analyst_role
from pipeline.warehouse.postgres import PostgresWarehouse

from .conftest import DAY1, make_day

pytestmark = pytest.mark.postgres


def test_grants_role_name_is_validated() -> None:
    assert "ehr_analyst" in analyst_grants_sql()
    with pytest.raises(WarehouseError, match="invalid role name"):
        analyst_grants_sql("x; DROP SCHEMA ehr")


def test_grants_analyst_member_can_select_but_not_write(pg_url: str) -> None:
    import psycopg

    group, member = f"ehr_analyst_t{os.getpid()}", f"analyst_t{os.getpid()}"
    with PostgresWarehouse(pg_url) as w:
        w.replace_days({"patients": make_day("patients", DAY1)}, DAY1)
    try:
        result = grant_analyst_role(pg_url, role=group)
        assert result["role"] == group and int(result["relations"]) >= 11
        assert grant_analyst_role(pg_url, role=group) == result  # rerunnable
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {member} LOGIN IN ROLE {group}")
            row = admin.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [group]).fetchone()
            assert row == (False,)
            # created after the grant: readable through the default privileges
            admin.execute("CREATE TABLE ehr.later_probe (x int)")
            admin.execute("INSERT INTO ehr.later_probe VALUES (1)")
        member_url = pg_url.replace("postgresql://postgres@", f"postgresql://{member}@")
        with psycopg.connect(member_url, autocommit=True) as analyst:
            # the day loaded above (the shared database may hold other days of earlier tests)
            assert analyst.execute("SELECT count(*) FROM ehr.patients WHERE ds = %s", [DAY1]).fetchone() == (5,)
            assert analyst.execute("SELECT x FROM ehr.later_probe").fetchone() == (1,)
            for statement in (
                "INSERT INTO ehr.later_probe VALUES (2)",
                "DELETE FROM ehr.patients",
                "UPDATE ehr.patients SET gender = 'X'",
                "CREATE TABLE ehr.mine (x int)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    analyst.execute(statement)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("DROP TABLE IF EXISTS ehr.later_probe")
            admin.execute(f"DROP ROLE IF EXISTS {member}")
            exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [group]).fetchone()
            if exists:
                admin.execute(f"DROP OWNED BY {group}")
                admin.execute(f"DROP ROLE {group}")


def test_grants_refuse_duckdb_url() -> None:
    with pytest.raises(WarehouseError, match="PostgreSQL"):
        grant_analyst_role("duckdb:///tmp/x.duckdb")
