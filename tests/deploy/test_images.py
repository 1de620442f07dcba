"""docker/ is consistent with the code it deploys (no Docker engine needed): the compose file's environment is a
valid pipeline configuration, its URLs point at its own services and databases, its Airflow commands parse with
the installed Airflow, the workers consume the queues the DAG sends tasks to and share the lake, and the images
pin the versions of constraints.txt and copy every folder the package reads at run time."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from pipeline.config import DAGS_DIR, REPO_ROOT, SCHEMAS_DIR, SQL_DIR, load_settings

DOCKER = REPO_ROOT / "docker"
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}
_REFERENCE = re.compile(r"\$\{(\w+)(:?[-?])?([^}]*)\}")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET")
# the image ARGs that pin a version, and what each must equal
_VERSION_ARGS = {"AIRFLOW_VERSION": "apache-airflow", "TORCH_VERSION": "torch", "PYTHON_VERSION": "python"}


@cache
def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip()):
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    low = re.search(r"python_requires\s*=\s*>=(\d+\.\d+)", (REPO_ROOT / "setup.cfg").read_text())
    assert low, "setup.cfg states python_requires"
    pins["python"] = low.group(1)
    return pins


@cache
def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (DOCKER / "ehr.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _interpolate(value: str, shell_env: dict[str, str] | None = None, dotenv: dict[str, str] | None = None) -> str:
    """Compose's interpolation with ``dotenv`` as docker/.env (default: the example): defaults apply where it has
    no value, secrets get a stand-in. ``$$`` is compose's escape for a ``$`` the container's shell expands, from
    ``shell_env`` when given."""
    dotenv = _env_example() if dotenv is None else dotenv

    def one(m: re.Match) -> str:
        var, operator, rest = m.groups()
        if dotenv.get(var):
            return dotenv[var]
        if operator in (":?", "?"):
            return f"secret-{var.lower()}"  # a required value the operator sets in docker/.env
        return rest if operator in (":-", "-") else ""

    value = _REFERENCE.sub(one, value.replace("$$", "\0")).replace("\0", "$")
    if shell_env is not None:
        value = re.sub(r"\$\{(\w+)\}", lambda m: shell_env[m.group(1)], value)
    return value


def _airflow_services() -> dict[str, dict[str, Any]]:
    """The services that run our image (every Airflow component and worker)."""
    return {name: s for name, s in _compose()["services"].items() if str(s.get("image", "")).startswith("ehr-pipeline")}


def _environment(service: str, dotenv: dict[str, str] | None = None) -> dict[str, str]:
    """What the service's containers see: the image's ENV, then the compose file's environment over it."""
    spec = _compose()["services"][service]
    image = _dockerfile_env(Path(spec["build"]["dockerfile"]).name)
    return image | {k: _interpolate(str(v), dotenv=dotenv) for k, v in spec["environment"].items()}


def _command(service: str) -> list[str]:
    command = _compose()["services"][service]["command"]
    return command if isinstance(command, list) else shlex.split(command)


def _queues(service: str) -> set[str]:
    command = _command(service)
    return set(command[command.index("--queues") + 1].split(","))


def _settings_of(service: str, monkeypatch: pytest.MonkeyPatch, dotenv: dict[str, str] | None = None):
    for key, value in _environment(service, dotenv).items():
        monkeypatch.setenv(key, value)
    return load_settings()


def _dockerfile(name: str) -> str:
    return (DOCKER / name).read_text()


def _dockerfile_env(name: str) -> dict[str, str]:
    block = re.search(r"^ENV (.*?)(?:\n\n|\Z)", _dockerfile(name), re.MULTILINE | re.DOTALL)
    assert block, f"{name} has no ENV block"
    return dict(pair.split("=", 1) for pair in shlex.split(block.group(1).replace("\\\n", " ")))


# --- the pipeline's configuration --------------------------------------------------------------------------------
def test_images_every_ehr_variable_is_a_setting() -> None:
    """A misspelt EHR_* variable would be ignored silently (the settings ignore unknown variables)."""
    fields = set(load_settings().model_fields)
    sources = {f"docker/{name} ENV": _dockerfile_env(name) for name in DOCKERFILES}
    sources |= {f"compose service {name}": _environment(name) for name in _airflow_services()}
    for where, env in sources.items():
        unknown = {k for k in env if k.startswith("EHR_") and k.removeprefix("EHR_").lower() not in fields}
        assert not unknown, f"{where}: {sorted(unknown)} are not settings of pipeline/config.py"


@pytest.mark.parametrize("dotenv", ["example", "secrets-only"])
@pytest.mark.parametrize("service", sorted(_airflow_services()))
def test_images_service_environment_is_a_valid_configuration(service: str, dotenv: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid with docker/.env copied from the example, and with only the secrets set (the compose defaults)."""
    settings = _settings_of(service, monkeypatch, None if dotenv == "example" else {})
    assert settings.warehouse.startswith("postgresql://")
    cuda_image = _compose()["services"][service]["build"]["dockerfile"].endswith(".cuda")
    assert settings.device == ("cuda" if cuda_image else "cpu")
    dockerfile = Path(_compose()["services"][service]["build"]["dockerfile"]).name
    assert Path(_environment(service)["AIRFLOW__CORE__DAGS_FOLDER"]) == _dockerfile_workdir(dockerfile) / DAGS_DIR.name


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_dockerfile_environment_is_a_valid_configuration(dockerfile: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    env = _dockerfile_env(dockerfile)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.device == ("cuda" if dockerfile.endswith(".cuda") else "cpu")
    workdir = _dockerfile_workdir(dockerfile)
    assert Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) == workdir / DAGS_DIR.name


# --- URLs, databases, queues, pools and volumes agree with each other --------------------------------------------
def test_images_urls_point_at_compose_services_and_their_databases() -> None:
    services = _compose()["services"]
    created = set(re.findall(r"CREATE DATABASE (\w+)", (DOCKER / "postgres-init" / "01-databases.sql.in").read_text()))
    roles = set(re.findall(r"CREATE ROLE (\w+)", (DOCKER / "postgres-init" / "01-databases.sql.in").read_text()))
    checked = 0
    for name in _airflow_services():
        for key, value in _environment(name).items():
            if "://" not in value or key.endswith("EXECUTION_API_SERVER_URL"):
                continue
            url = urlsplit(value)
            assert url.hostname in services, f"{name} {key}: host {url.hostname} is not a compose service"
            if url.scheme.endswith(("postgresql", "postgresql+psycopg")):
                assert url.path.lstrip("/") in created and url.username in roles, (name, key)
                checked += 1
    assert checked >= 3 * len(_airflow_services())  # metadata, result backend and warehouse on every container
    api = urlsplit(_environment("airflow-scheduler")["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api.hostname == "airflow-apiserver" and str(api.port) in " ".join(_command("airflow-apiserver"))


def test_images_workers_consume_the_queues_the_dag_sends_tasks_to(monkeypatch: pytest.MonkeyPatch) -> None:
    dag_side = _settings_of("airflow-scheduler", monkeypatch)  # the DAG is parsed with the scheduler's settings
    assert dag_side.gpu_queue in _queues("worker-gpu")
    assert _airflow_cli()["default_queue"] in _queues("worker-cpu")  # every other task
    init = _airflow_init_lines()
    pools = [shlex.split(line) for line in init if line.startswith("airflow pools set")]
    assert [p[3] for p in pools] == [dag_side.gpu_pool, dag_side.backfill_pool]  # ehr_history's pool too
    assert int(pools[0][4]) == dag_side.gpu_pool_slots and int(pools[1][4]) == dag_side.backfill_pool_slots
    gpu = _compose()["services"]["worker-gpu"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"]
               for d in gpu["deploy"]["resources"]["reservations"]["devices"])
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"


def test_images_workers_share_the_lake(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task on one worker reads what a task on another wrote: the workdir is the same named volume everywhere."""
    volumes = set()
    for name in _airflow_services():
        with monkeypatch.context() as mp:
            workdir = str(_settings_of(name, mp).workdir)
        mounts = {target: source for source, target, *_ in (v.split(":") for v in _compose()["services"][name]["volumes"])}
        assert workdir in mounts, f"{name}: nothing mounted at EHR_WORKDIR={workdir}"
        volumes.add(mounts[workdir])
    assert len(volumes) == 1 and volumes <= set(_compose()["volumes"])


def test_images_secrets_have_no_fallback_and_the_env_example_leaves_them_empty() -> None:
    """A compose file that falls back to a known password starts a deployment anyone can log into:
    every secret must be required (``${VAR:?message}``) and the example must not supply a value."""
    sources = {
        "docker-compose.yaml": (DOCKER / "docker-compose.yaml").read_text(),
        "postgres-init/00-databases.sh": (DOCKER / "postgres-init" / "00-databases.sh").read_text(),
    }
    secrets, referenced = set(), set()
    for name, text in sources.items():
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        for var, operator, _rest in _REFERENCE.findall(body):
            referenced.add((var, operator))
            if _SECRET_NAME.search(var):
                secrets.add(var)
                assert operator == ":?", f"{name}: ${{{var}}} must be required (${{{var}:?...}}), not {operator!r}"
    assert {"POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "EHR_DB_PASSWORD", "AIRFLOW_FERNET_KEY"} <= secrets
    example = _env_example()
    for var in secrets:
        assert var in example, f"{var} is missing from docker/ehr.env.example"
        assert example[var] == "", f"docker/ehr.env.example must not ship a value for {var}"
    # every variable compose reads without a default is documented in the example
    assert {var for var, operator in referenced if not operator} <= set(example)
    # no credentials written out in any connection URL
    for key, value in _compose()["x-airflow-env"].items():
        if isinstance(value, str) and "://" in value and "@" in value:
            userinfo = value.split("://", 1)[1].split("@", 1)[0]
            assert ":" not in userinfo or userinfo.split(":", 1)[1].startswith("${"), key


def test_images_postgres_allows_locks_for_queries_over_many_day_partitions() -> None:
    command = _compose()["services"]["postgres"]["command"]
    setting = next(arg for arg in command if arg.startswith("max_locks_per_transaction="))
    assert int(setting.split("=")[1]) >= 256
    assert (DOCKER / "postgres-init" / "00-databases.sh").stat().st_mode & 0o111, "init script must be executable"


# --- commands -----------------------------------------------------------------------------------------------------
def _airflow_init_lines() -> list[str]:
    script, env = _command("airflow-init")[-1], _environment("airflow-init")
    return [_interpolate(line.strip(), env) for line in script.splitlines() if line.strip() and line.strip() != "set -e"]


@cache
def _airflow_cli() -> dict[str, Any]:
    """Every ``airflow …`` command of the compose file parsed by the installed Airflow's own CLI parser (with the
    compose file's executor, whose commands it adds), in a child process with a scratch Airflow home."""
    commands = [_command(name)[1:] for name in _airflow_services() if _command(name)[0] == "airflow"]
    commands += [shlex.split(line)[1:] for line in _airflow_init_lines() if line.startswith("airflow ")]
    script = """
import json, sys
from airflow.cli.cli_parser import get_parser
from airflow.configuration import conf

parser, problems = get_parser(), {}
for command in json.loads(sys.argv[1]):
    try:
        parser.parse_args(command)
    except SystemExit as exc:
        problems[" ".join(command)] = exc.code
print(json.dumps({"problems": problems, "default_queue": conf.get("operators", "default_queue"), "parsed": len(json.loads(sys.argv[1]))}))
"""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env |= {"AIRFLOW_HOME": home, "AIRFLOW__CORE__EXECUTOR": _environment("airflow-scheduler")["AIRFLOW__CORE__EXECUTOR"],
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        proc = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], env=env, capture_output=True,
                              text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_images_airflow_commands_parse_with_the_installed_airflow() -> None:
    result = _airflow_cli()
    assert result["parsed"] >= len(_airflow_services()) and result["problems"] == {}


def test_images_init_runs_real_pipeline_commands() -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    ours = [shlex.split(line) for line in _airflow_init_lines() if line.startswith("ehr-pipeline ")]
    assert ours
    for command in ours:
        result = CliRunner().invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, (command, result.output)


# --- images ---------------------------------------------------------------------------------------------------------
def _args(dockerfile: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, value in re.findall(r"^ARG\s+(\w+)=(\S+)", _dockerfile(dockerfile), re.MULTILINE):
        found.setdefault(name, set()).add(value)
    return found


def _dockerfile_workdir(dockerfile: str) -> Path:
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", _dockerfile(dockerfile), re.MULTILINE)
    assert len(workdirs) == 1
    return Path(workdirs[0])


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_pin_the_constraints_versions(dockerfile: str) -> None:
    pins = _pins()
    versions = {name: values for name, values in _args(dockerfile).items() if name.endswith("_VERSION")}
    assert set(versions) <= set(_VERSION_ARGS), f"a new pinned ARG needs a check here: {set(versions) - set(_VERSION_ARGS)}"
    for name, values in versions.items():
        assert values == {pins[_VERSION_ARGS[name]]}, f"{dockerfile}: {name}={values}, constraints say {pins[_VERSION_ARGS[name]]}"
    text = _dockerfile(dockerfile)
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}-python\$\{PYTHON_VERSION\}$", text, re.MULTILINE)
    for line in re.findall(r"pip install[^\n]*(?:\\\n[^\n]*)*", text):
        # a literal pin must be the constraints' one; the project is installed under the constraints
        for package, version in re.findall(r'"?([A-Za-z0-9_.\-]+)==([0-9][^"\s]*)"?', line):
            assert pins.get(package.lower()) == version, (dockerfile, package, version)
        if "-e " in line:
            assert "-c constraints.txt" in line, line


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_copy_every_folder_the_package_reads(dockerfile: str) -> None:
    """pipeline/config.py finds schemas/, sql/ and dags/ next to the package: the image must have them there."""
    workdir = _dockerfile_workdir(dockerfile)
    copied = {(source, workdir / dest) for source, dest in
              re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s+(\S+)$", _dockerfile(dockerfile), re.MULTILINE)}
    for folder in (REPO_ROOT / "pipeline", SCHEMAS_DIR, SQL_DIR, DAGS_DIR):
        relative = folder.relative_to(REPO_ROOT)
        assert (str(relative), workdir / relative) in copied, f"{dockerfile} does not copy {relative}/ to {workdir}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_torch_matches_the_image(dockerfile: str) -> None:
    """The CPU image takes torch from PyTorch's CPU index (no CUDA libraries); the CUDA image from a CUDA one."""
    args = {name: next(iter(values)) for name, values in _args(dockerfile).items()}
    index = args["TORCH_INDEX_URL"].replace("${TORCH_CUDA}", args.get("TORCH_CUDA", ""))
    assert index.startswith("https://download.pytorch.org/whl/")
    build = index.rsplit("/", 1)[1]
    if dockerfile.endswith(".cuda"):
        assert re.fullmatch(r"cu\d{3}", build), build
    else:
        assert build == "cpu"
    # torch is installed from that index before the project, so the constraints' torch is already satisfied
    text = _dockerfile(dockerfile)
    assert text.index('--index-url "${TORCH_INDEX_URL}"') < text.index("-c constraints.txt")
