"""Read-only access for analysts: the ``ehr_analyst`` group role (SQL in sql/postgres/grants/).

    ehr-pipeline grant-analyst                     # creates/refreshes ehr_analyst
    psql -c "CREATE ROLE alice LOGIN IN ROLE ehr_analyst"   # then give people membership

Run it as the role that owns schema ``ehr`` (the pipeline's role; it needs CREATEROLE the first
time): default privileges apply to tables and views that role creates later.
"""

from __future__ import annotations

import re

from pipeline.config import SQL_DIR
from pipeline.warehouse.base import WarehouseError

GRANTS_SQL = SQL_DIR / "postgres" / "grants" / "ehr_analyst.sql"
DEFAULT_ANALYST_ROLE = "ehr_analyst"
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def analyst_grants_sql(role: str = DEFAULT_ANALYST_ROLE) -> str:
    """The grant script for ``role`` (a plain lower-case identifier, so it needs no quoting)."""
    if not _ROLE_NAME.fullmatch(role):
        raise WarehouseError(f"invalid role name {role!r}: use lower-case letters, digits and _")
    return GRANTS_SQL.read_text(encoding="utf-8").replace("{role}", role)


def grant_analyst_role(url: str, role: str = DEFAULT_ANALYST_ROLE) -> dict[str, object]:
    """Create (if needed) the NOLOGIN group ``role`` with read-only access to schema ``ehr``.

    Returns the role and the number of tables and views it can read. PostgreSQL only.
    """
    if not url.startswith(("postgresql", "postgres://")):
        raise WarehouseError(
            "grant-analyst needs a PostgreSQL warehouse (EHR_WAREHOUSE_URL=postgresql://...)"
        )
    from pipeline.warehouse.postgres import PostgresWarehouse

    script = analyst_grants_sql(role)
    with PostgresWarehouse(url) as warehouse:  # also makes sure schema ehr and its tables exist
        warehouse.execute_script(script)
        readable = warehouse.query(
            "SELECT count(*) AS n FROM information_schema.role_table_grants "
            "WHERE grantee = ? AND table_schema = 'ehr' AND privilege_type = 'SELECT'",
            [role],
        )
    return {"role": role, "relations": int(readable.column("n")[0].as_py())}
