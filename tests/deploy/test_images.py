"""Static checks of docker/: the compose file parses, services and queues are as documented, and the
images pin the same versions as constraints.txt. No Docker engine needed."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import REPO_ROOT

DOCKER = REPO_ROOT / "docker"
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
REQUIRED_SERVICES = {"postgres", "redis", *AIRFLOW_SERVICES, "worker-cpu", "worker-gpu"}


@cache
def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip()):
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


@cache
def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


def _args(dockerfile: str) -> dict[str, str]:
    text = (DOCKER / dockerfile).read_text()
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))


def _command(service: str) -> list[str]:
    command = _compose()["services"][service]["command"]
    return command if isinstance(command, list) else command.split()


def _queues(service: str) -> set[str]:
    command = _command(service)
    return set(command[command.index("--queues") + 1].split(","))


def test_images_compose_parses_with_every_documented_service() -> None:
    services = _compose()["services"]
    assert set(services) >= REQUIRED_SERVICES
    for name in (*AIRFLOW_SERVICES, "worker-cpu", "worker-gpu"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql"), name
        assert env["EHR_WAREHOUSE_URL"].startswith("postgresql://"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"


def test_images_components_run_the_airflow_3_commands() -> None:
    assert _command("airflow-apiserver")[:2] == ["airflow", "api-server"]
    assert _command("airflow-scheduler") == ["airflow", "scheduler"]
    assert _command("airflow-dag-processor") == ["airflow", "dag-processor"]
    assert _command("airflow-triggerer") == ["airflow", "triggerer"]
    init = " ".join(_command("airflow-init"))
    assert "airflow db migrate" in init and "airflow pools set gpu" in init


def test_images_workers_consume_the_documented_queues() -> None:
    services = _compose()["services"]
    assert _command("worker-cpu")[:3] == ["airflow", "celery", "worker"]
    assert _queues("worker-cpu") == {"default"}
    assert _queues("worker-gpu") == {"gpu"}
    assert "gpu" in services["worker-gpu"]["environment"]["EHR_GPU_QUEUE"]
    assert services["worker-gpu"]["environment"]["EHR_GPU_POOL"] == "gpu"
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert services["worker-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert services["worker-cpu"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert "deploy" not in services["worker-cpu"]


def test_images_share_the_lake_between_workers() -> None:
    services = _compose()["services"]
    mounts = {
        name: {v.split(":")[1] for v in services[name]["volumes"]} for name in ("worker-cpu", "worker-gpu")
    }
    assert "/opt/ehr/data" in mounts["worker-cpu"] & mounts["worker-gpu"]
    assert "ehr-data" in _compose()["volumes"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_pin_the_constraints_versions(dockerfile: str) -> None:
    pins, args = _pins(), _args(dockerfile)
    text = (DOCKER / dockerfile).read_text()
    assert args["AIRFLOW_VERSION"] == pins["apache-airflow"]
    assert args["TORCH_VERSION"] == pins["torch"]
    assert re.search(
        r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}-python\$\{PYTHON_VERSION\}$", text, re.MULTILINE
    )
    assert "-c constraints.txt" in text
    assert text.count("ARG AIRFLOW_VERSION=") == 2  # before FROM and inside the stage: both the same
    assert len(set(re.findall(r"ARG AIRFLOW_VERSION=(\S+)", text))) == 1


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_base_python_matches_the_package(dockerfile: str) -> None:
    setup = (REPO_ROOT / "setup.cfg").read_text()
    low = re.search(r"python_requires\s*=\s*>=(\d+\.\d+)", setup)
    assert low and _args(dockerfile)["PYTHON_VERSION"] == low.group(1)


def test_images_torch_wheels_come_from_the_pytorch_indexes() -> None:
    assert _args("Dockerfile")["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    cuda = _args("Dockerfile.cuda")
    assert re.fullmatch(r"cu\d{3}", cuda["TORCH_CUDA"])
    assert cuda["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/${TORCH_CUDA}"


def test_images_postgres_init_creates_both_databases() -> None:
    init = DOCKER / "postgres-init"
    sql = (init / "01-databases.sql.in").read_text()
    assert "CREATE DATABASE airflow" in sql and "CREATE DATABASE ehr" in sql
    assert Path(init / "00-databases.sh").stat().st_mode & 0o111, "init script must be executable"


# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}
_REFERENCE = re.compile(r"\$\{(\w+)(:?[-?])?([^}]*)\}")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET")


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (DOCKER / "ehr.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_images_secrets_have_no_fallback_and_the_env_example_leaves_them_empty() -> None:
    """A compose file that falls back to a known password starts a deployment anyone can log into:
    every secret must be required (``${VAR:?message}``) and the example must not supply a value."""
    sources = {
        "docker-compose.yaml": (DOCKER / "docker-compose.yaml").read_text(),
        "postgres-init/00-databases.sh": (DOCKER / "postgres-init" / "00-databases.sh").read_text(),
    }
    secrets = set()
    for name, text in sources.items():
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        for var, operator, _rest in _REFERENCE.findall(body):
            if _SECRET_NAME.search(var):
                secrets.add(var)
                assert operator == ":?", f"{name}: ${{{var}}} must be required (${{{var}:?...}}), not {operator!r}"
    assert {"POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "EHR_DB_PASSWORD", "AIRFLOW_FERNET_KEY"} <= secrets
    example = _env_example()
    for var in secrets:
        assert var in example, f"{var} is missing from docker/ehr.env.example"
        assert example[var] == "", f"docker/ehr.env.example must not ship a value for {var}"
    # no credentials written out in any connection URL
    env = _compose()["x-airflow-env"]
    for key, value in env.items():
        if isinstance(value, str) and "://" in value and "@" in value:
            userinfo = value.split("://", 1)[1].split("@", 1)[0]
            assert ":" not in userinfo or userinfo.split(":", 1)[1].startswith("${"), key


def test_images_postgres_allows_locks_for_queries_over_many_day_partitions() -> None:
    command = _compose()["services"]["postgres"]["command"]
    setting = next(arg for arg in command if arg.startswith("max_locks_per_transaction="))
    assert int(setting.split("=")[1]) >= 256
