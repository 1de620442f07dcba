"""CI runs what the README says, and cannot go green with the service tests skipped: .ci/run starts the services
with EHR_REQUIRE_SERVICES=1 and runs the README's test command, which turns "PostgreSQL not reachable" skips into
failures; without it (locally) they stay skips. The fast lane leaves out every test that needs a service."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT

# any PostgreSQL test will do: its fixture is where the server is looked for
PG_TEST = (
    "tests/warehouse/postgres/test_warehouse.py::test_postgres_ensure_schema_creates_every_table_and_is_rerunnable"
)


def _readme_commands() -> list[str]:
    """The commands of the README's first code block, comments dropped."""
    block = re.search(r"```bash\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.DOTALL)
    assert block, "README.md starts with a bash block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ci_readme_starts_with_demo_and_test() -> None:
    assert _readme_commands()[:2] == ["make demo", "make test"]


@pytest.mark.parametrize("services_exit", [0, 1], ids=["services-up", "services-missing"])
def test_ci_run_starts_the_services_then_runs_the_readme_test_command(tmp_path: Path, services_exit: int) -> None:
    """.ci/run, run in a copy of the repository with the services script and make replaced by recorders."""
    repo, bin_dir, log = tmp_path / "repo", tmp_path / "bin", tmp_path / "calls.log"
    (repo / ".ci").mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy2(REPO_ROOT / ".ci" / "run", repo / ".ci" / "run")
    _stub(repo / ".ci", "services", f'echo "services EHR_REQUIRE_SERVICES=${{EHR_REQUIRE_SERVICES:-}}" >> "{log}"; '
                                    f"exit {services_exit}")
    _stub(bin_dir, "make", f'echo "make $* EHR_REQUIRE_SERVICES=${{EHR_REQUIRE_SERVICES:-}}" >> "{log}"')
    env = {k: v for k, v in os.environ.items() if k != "EHR_REQUIRE_SERVICES"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", str(repo / ".ci" / "run")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    calls = log.read_text().splitlines()
    if services_exit:  # a service that cannot be started stops CI before any test runs
        assert proc.returncode != 0 and calls == ["services EHR_REQUIRE_SERVICES=1"]
        return
    assert proc.returncode == 0, proc.stderr
    assert calls == ["services EHR_REQUIRE_SERVICES=1", f"{_readme_commands()[1]} EHR_REQUIRE_SERVICES=1"]


@pytest.mark.parametrize("required", [False, True], ids=["local", "ci"])
def test_ci_services_script_fails_only_when_services_are_required(tmp_path: Path, required: bool) -> None:
    """.ci/services with PostgreSQL and Redis neither running nor startable (their commands replaced by failures)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("pg_isready", "pg_ctlcluster", "redis-cli", "redis-server"):
        _stub(bin_dir, command, "exit 2")
    _stub(bin_dir, "sleep", "exit 0")  # its wait loops, without the waiting
    env = {k: v for k, v in os.environ.items() if k != "EHR_REQUIRE_SERVICES"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    if required:
        env["EHR_REQUIRE_SERVICES"] = "1"
    proc = subprocess.run(["bash", str(REPO_ROOT / ".ci" / "services")], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert "PostgreSQL is not reachable" in proc.stderr and "Redis is not reachable" in proc.stderr
    assert (proc.returncode != 0) == required, proc.stderr


def test_ci_fast_lane_leaves_out_every_marked_test() -> None:
    """`make test-fast` deselects every marker setup.cfg registers (each marks tests that need a service or take
    long); `make test` deselects nothing. The README names the fast lane."""
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    registered = {line.split(":")[0].strip() for line in parser["tool:pytest"]["markers"].splitlines() if line.strip()}
    assert {"slow", "postgres", "celery", "e2e"} <= registered

    def recipe(target: str) -> str:
        stamp = REPO_ROOT / ".venv" / ".installed"
        proc = subprocess.run(["make", "-n", "-o", str(stamp.relative_to(REPO_ROOT)), target], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60, check=True)
        return next(line for line in proc.stdout.splitlines() if "pytest" in line)

    fast = re.search(r'-m "([^"]+)"', recipe("test-fast"))
    assert fast, recipe("test-fast")
    assert set(re.findall(r"not (\w+)", fast.group(1))) == registered
    assert not re.search(r"pytest .*-m ", recipe("test")), recipe("test")
    assert "`make test-fast`" in (REPO_ROOT / "README.md").read_text()


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
