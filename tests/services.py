"""Test access to the local services (PostgreSQL, Redis): one place that finds them and decides what a missing
one means. Locally a missing service skips its tests; with EHR_REQUIRE_SERVICES=1 (set by .ci/run) it fails
them, so CI cannot go green without running them.

A test that reaches the PostgreSQL server must be marked ``postgres`` (``make test-fast`` deselects those, and
must never need the server): :func:`require_pg_server` fails an unmarked one, whether the server is up or not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

# The test being set up or run (set by tests/conftest.py's pytest_runtest_setup hook).
current_test: pytest.Item | None = None

PG_SERVER_URL = os.environ.get("EHR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Read at import: the autouse fixture of tests/conftest.py removes every EHR_* variable during tests.
REQUIRE_SERVICES = os.environ.get("EHR_REQUIRE_SERVICES", "") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail when EHR_REQUIRE_SERVICES=1 (CI), so a missing service cannot pass as green."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (EHR_REQUIRE_SERVICES=1: this service is required)", pytrace=False)
    pytest.skip(reason)


def pg_problem(url: str = PG_SERVER_URL) -> str | None:
    """Why the PostgreSQL server at ``url`` cannot be used, or None when it answers."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {url.split('@')[-1]}: {str(exc).strip().splitlines()[0]}"


def require_marker(marker: str, service: str) -> None:
    """Fail the current test unless it carries ``marker``: the fast lane deselects by marker."""
    if current_test is not None and current_test.get_closest_marker(marker) is None:
        pytest.fail(f"{current_test.nodeid} uses {service} but is not marked @pytest.mark.{marker}: mark it, so "
                    "`make test-fast` (which deselects it) never needs the service", pytrace=False)


def require_pg_server() -> None:
    require_marker("postgres", "the PostgreSQL server")
    if problem := pg_problem():
        skip_or_fail(problem)


def with_database(url: str, database: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{database}"


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A fresh, empty database ``<prefix>_<pid>`` on the test server, dropped (with its connections) afterwards.

    The process id keeps test runs side by side on one server (other engineers, CI) from dropping each
    other's databases.
    """
    import psycopg

    require_pg_server()
    name = f"{prefix}_{os.getpid()}"
    with psycopg.connect(PG_SERVER_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(PG_SERVER_URL, name)
    finally:
        with psycopg.connect(PG_SERVER_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
