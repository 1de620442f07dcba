"""CI cannot go green with the service tests skipped: .ci/run sets EHR_REQUIRE_SERVICES=1, which turns
"PostgreSQL not reachable" skips into failures; without it (locally) they stay skips."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from pipeline.config import REPO_ROOT

# any PostgreSQL test will do: its fixture is where the server is looked for
PG_TEST = (
    "tests/warehouse/postgres/test_warehouse.py::test_postgres_ensure_schema_creates_every_table_and_is_rerunnable"
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ci_run_requires_the_services() -> None:
    script = (REPO_ROOT / ".ci" / "run").read_text()
    lines = [
        line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "export EHR_REQUIRE_SERVICES=1" in lines
    assert lines.index("export EHR_REQUIRE_SERVICES=1") < lines.index("make test")
    services = (REPO_ROOT / ".ci" / "services").read_text()
    assert re.search(r'EHR_REQUIRE_SERVICES:-}" = 1.*?exit 1', services, re.DOTALL)


@pytest.mark.parametrize("required", [False, True], ids=["local", "ci"])
def test_ci_missing_postgres_skips_locally_and_fails_in_ci(required: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
    env["EHR_TEST_PG_URL"] = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    if required:
        env["EHR_REQUIRE_SERVICES"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rsf", PG_TEST],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    if required:
        assert proc.returncode != 0, output
        assert "EHR_REQUIRE_SERVICES=1" in output and re.search(r"\b1 (error|failed)\b", output), output
    else:
        assert proc.returncode == 0, output
        assert "1 skipped" in output and "PostgreSQL not reachable" in output, output
