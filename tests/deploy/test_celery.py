"""Distributed execution end to end: Airflow 3 with CeleryExecutor (Redis broker, PostgreSQL metadata)
runs ``ehr_nightly`` for one day into a PostgreSQL warehouse.

Started on loopback, in their own process groups, killed in a ``finally``: api-server (it serves the
execution API the tasks talk to), scheduler, dag-processor and one Celery worker consuming the
``default`` and ``gpu`` queues. Fresh databases ``airflow_meta_<pid>`` and ``ehr_wh_<pid>`` are dropped
at the end. The broker is a private ``redis-server`` on a free loopback port when redis-server is on
PATH (stopped at the end); otherwise the shared Redis on 127.0.0.1:6379, in a database number that
was empty when the test claimed it (only that one is flushed at the end).

Skipped when PostgreSQL or Redis cannot be reached, except with EHR_REQUIRE_SERVICES=1 (set by
.ci/run): then it fails, so CI cannot go green without running it.

NER and risk are switched off (EHR_NER_ENABLED / EHR_RISK_ENABLED=false: no model to train here), but
their mapped tasks still run, on the ``gpu`` queue and in the ``gpu`` pool, which the test checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from pipeline.config import DAGS_DIR
from tests.services import PG_SERVER_URL, pg_problem, skip_or_fail, with_database

pytestmark = [pytest.mark.celery, pytest.mark.slow, pytest.mark.postgres]

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
DAY = date(2026, 1, 2)
RUN_TIMEOUT_S = 600
BIN = Path(sys.executable).parent
# A schedule that never fires while the test runs (next 29 February after the start date), so the only
# run is the one the test triggers.
NEVER = "0 0 29 2 *"


def _redis_problem(port: int = REDIS_PORT) -> str | None:
    try:
        with socket.create_connection((REDIS_HOST, port), timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                return f"Redis at {REDIS_HOST}:{port} did not answer PING"
    except OSError as exc:
        return f"Redis not reachable at {REDIS_HOST}:{port}: {exc}"
    return None


class Broker:
    """The Celery broker of one test: a private redis-server, or an empty database of the shared one."""

    def __init__(self, workdir: Path) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.claim: tuple[int, str] | None = None
        server = shutil.which("redis-server")
        if server:
            port = _free_port()
            self.proc = subprocess.Popen(
                [server, "--port", str(port), "--bind", REDIS_HOST, "--save", "", "--appendonly", "no",
                 "--dir", str(workdir)],
                stdout=(workdir / "redis.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 15
            while (problem := _redis_problem(port)) and time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
            if problem:
                self.stop()
                skip_or_fail(f"private redis-server did not start: {problem}")
            self.url = f"redis://{REDIS_HOST}:{port}/0"
            return
        if problem := _redis_problem():
            skip_or_fail(problem)
        self.url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{self._claim_empty_db()}"

    def _claim_empty_db(self) -> int:
        """A database number of the shared Redis that holds nothing; claimed with a key (SET NX), so two
        test runs at once do not pick the same one."""
        import redis

        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        for db in range(1, 16):
            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=3)
            if client.dbsize() == 0 and client.set("ehr_celery_test_claim", token, nx=True):
                self.claim = (db, token)
                return db
        skip_or_fail(f"no empty database on the shared Redis at {REDIS_HOST}:{REDIS_PORT}")
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        elif self.claim is not None:
            import redis

            db, token = self.claim
            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=3)
            with contextlib.suppress(redis.RedisError):
                # everything in this database arrived after the claim of an empty one: ours to remove
                if client.get("ehr_celery_test_claim") == token.encode():
                    client.flushdb()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_SERVER_URL, autocommit=True) as con:
        con.execute(sql)


class Components:
    """Airflow processes started by the test, each in its own process group, with a log file each."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the kill below reaches its children too
        )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"airflow {name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group (worker children)
            proc.wait(timeout=10)


def _run(env: dict[str, str], *cmd: str, timeout: int = 300) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    return proc.stdout


@dataclass
class Deployment:
    env: dict[str, str]
    components: Components
    meta_url: str
    warehouse_url: str


@pytest.fixture
def celery_deployment(tmp_path: Path) -> Iterator[Deployment]:
    if problem := pg_problem():
        skip_or_fail(problem)
    if not (DAGS_DIR / "ehr_nightly.py").is_file() or not (BIN / "ehr-pipeline").exists():
        skip_or_fail("dags/ehr_nightly.py or the ehr-pipeline console script is not there yet")
    if shutil.which("airflow", path=str(BIN)) is None:
        skip_or_fail("airflow is not installed in this environment")

    pid = os.getpid()
    meta_db, wh_db = f"airflow_meta_{pid}", f"ehr_wh_{pid}"
    broker = Broker(tmp_path)
    try:
        for db in (meta_db, wh_db):
            _admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            _admin(f"CREATE DATABASE {db}")
    except BaseException:
        broker.stop()
        raise
    meta_url = with_database(PG_SERVER_URL, meta_db).replace("postgresql://", "postgresql+psycopg://", 1)
    port = _free_port()
    workdir = tmp_path / "ehr"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_url,
        # psycopg 3 serves the async engine too (Airflow would otherwise derive an asyncpg URL)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": meta_url,
        "AIRFLOW__CELERY__BROKER_URL": broker.url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "EHR_WORKDIR": str(workdir),
        "EHR_SOURCE_PATH": str(tmp_path / "source"),
        "EHR_SOURCE_LAYOUT": "mimic4",
        "EHR_WAREHOUSE_URL": with_database(PG_SERVER_URL, wh_db),
        "EHR_NER_ENABLED": "false",
        "EHR_RISK_ENABLED": "false",
        "EHR_RETRIES": "0",
        "EHR_SCHEDULE": NEVER,
        "EHR_START_DATE": "2026-01-01",
        "EHR_GPU_QUEUE": "gpu",
        "EHR_GPU_POOL": "gpu",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("EHR_CONFIG", None)
    (tmp_path / "logs").mkdir()
    components = Components(env, tmp_path / "logs")
    try:
        _run(
            env, str(BIN / "ehr-pipeline"), "generate", "--out", str(tmp_path / "source"), "--patients", "40",
            "--start", "2026-01-01", "--days", "2", "--history-days", "0",
        )  # fmt: skip
        _run(env, str(BIN / "airflow"), "db", "migrate")
        pools = tmp_path / "pools.json"  # one CLI call for both pools (each call costs seconds of start-up)
        pools.write_text(json.dumps({"gpu": {"slots": 2, "description": "NER and risk tasks"},
                                     "backfill": {"slots": 2, "description": "history backfill chunks"}}))
        _run(env, str(BIN / "airflow"), "pools", "import", str(pools))
        components.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port))
        components.start("scheduler", "scheduler")
        components.start("dag-processor", "dag-processor")
        components.start("worker", "celery", "worker", "--queues", "default,gpu", "--concurrency", "2")
        yield Deployment(env, components, with_database(PG_SERVER_URL, meta_db), env["EHR_WAREHOUSE_URL"])
    finally:
        components.stop()
        for db in (meta_db, wh_db):
            _admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        broker.stop()


def _meta_rows(meta_url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(meta_url, autocommit=True) as con:
        return list(con.execute(sql, params).fetchall())


def _wait_for_dag(dep: Deployment, deadline: float, dag_id: str = "ehr_nightly") -> None:
    while time.monotonic() < deadline:
        dep.components.check_alive()
        try:
            if _meta_rows(dep.meta_url, "SELECT 1 FROM dag WHERE dag_id = %s AND NOT is_paused", (dag_id,)):
                return
            errors = _meta_rows(dep.meta_url, "SELECT filename, stacktrace FROM import_error")
        except Exception:  # tables appear with the first parse
            errors = []
        if errors:
            raise AssertionError(f"DAG import errors: {errors}")
        time.sleep(2)
    raise AssertionError(f"{dag_id} was not parsed in time:\n" + dep.components.tail("dag-processor"))


def _task_report(dep: Deployment, run_id: str, dag_id: str = "ehr_nightly") -> str:
    """Task states, the errors of failed tasks (from their log files) and the tails of the component logs."""
    rows = _meta_rows(
        dep.meta_url,
        "SELECT task_id, map_index, state, queue, pool, hostname FROM task_instance WHERE run_id = %s "
        "ORDER BY task_id, map_index",
        (run_id,),
    )
    errors = []
    for path in sorted(Path(dep.env["AIRFLOW_HOME"], "logs", f"dag_id={dag_id}").rglob("*.log")):
        failed = [
            line[:1500] for line in path.read_text(errors="replace").splitlines() if '"level":"error"' in line
        ]
        if failed:
            errors.append(f"--- {path.parent.name}/{path.name} ---\n" + "\n".join(failed[-3:]))
    logs = "\n".join(f"--- {name} ---\n{dep.components.tail(name, 15)}" for name in dep.components.procs)
    return "\n".join(map(str, rows)) + "\n" + "\n".join(errors) + "\n" + logs


def test_celery_runs_ehr_nightly_for_one_day_into_postgres(celery_deployment: Deployment) -> None:
    dep = celery_deployment
    started = time.monotonic()
    deadline = started + RUN_TIMEOUT_S
    _wait_for_dag(dep, deadline)
    run_id = f"celery_test__{DAY.isoformat()}"
    _run(
        dep.env, str(BIN / "airflow"), "dags", "trigger", "ehr_nightly",
        "--logical-date", f"{DAY.isoformat()}T00:00:00+00:00", "--run-id", run_id,
    )  # fmt: skip
    state = None
    while time.monotonic() < deadline:
        dep.components.check_alive()
        rows = _meta_rows(dep.meta_url, "SELECT state FROM dag_run WHERE run_id = %s", (run_id,))
        state = rows[0][0] if rows else None
        if state in ("success", "failed"):
            break
        time.sleep(3)
    assert state == "success", f"ehr_nightly {DAY} ended {state!r}:\n{_task_report(dep, run_id)}"

    # every task ran on a Celery worker; NER and risk on the gpu queue, in the gpu pool
    instances = _meta_rows(
        dep.meta_url,
        "SELECT task_id, state, queue, pool, hostname FROM task_instance WHERE run_id = %s",
        (run_id,),
    )
    assert {t[0] for t in instances} >= {"extract", "validate", "ner", "risk", "load", "report"}
    for task_id, ti_state, queue, pool, hostname in instances:
        assert ti_state in ("success", "skipped"), (task_id, ti_state)
        if task_id in ("ner", "risk"):
            assert (queue, pool) == ("gpu", "gpu"), (task_id, queue, pool)
        elif ti_state == "success":
            assert queue == "default", (task_id, queue)
        assert ti_state != "success" or hostname, f"{task_id} has no worker hostname"

    from pipeline.warehouse.postgres import PostgresWarehouse

    with PostgresWarehouse(dep.warehouse_url) as warehouse:
        counts = {
            row["table_name"]: row["row_count"]
            for row in warehouse.counts_by_day().to_pylist()
            if row["ds"] == DAY
        }
        stages = set(
            warehouse.query("SELECT DISTINCT stage FROM ehr.pipeline_runs WHERE ds = ?", [DAY])
            .column(0)
            .to_pylist()
        )
    assert counts.get("admissions", 0) > 0 and counts.get("patients", 0) > 0, counts
    assert counts.get("validation_results", 0) > 0, counts
    assert {"extract", "validate", "load", "report"} <= stages, stages
    print(
        f"ehr_nightly {DAY} on Celery: {time.monotonic() - started:.0f} s after start; warehouse rows {counts}"
    )


def test_celery_runs_ehr_history_chunks_on_workers_into_postgres(celery_deployment: Deployment) -> None:
    """The ehr_history DAG: one mapped task per chunk and stage on the Celery workers, the chunks recorded done."""
    dep = celery_deployment
    deadline = time.monotonic() + RUN_TIMEOUT_S
    _wait_for_dag(dep, deadline, "ehr_history")
    run_id = "celery_test__history"
    conf = '{"start": "2026-01-01", "end": "2026-01-02", "chunk": "1", "skip_ner": true, "skip_risk": true}'
    _run(dep.env, str(BIN / "airflow"), "dags", "trigger", "ehr_history", "--run-id", run_id, "--conf", conf)
    state = None
    while time.monotonic() < deadline:
        dep.components.check_alive()
        rows = _meta_rows(dep.meta_url, "SELECT state FROM dag_run WHERE run_id = %s", (run_id,))
        state = rows[0][0] if rows else None
        if state in ("success", "failed"):
            break
        time.sleep(3)
    assert state == "success", f"ehr_history ended {state!r}:\n{_task_report(dep, run_id, 'ehr_history')}"
    instances = _meta_rows(
        dep.meta_url,
        "SELECT task_id, map_index, state, pool, hostname FROM task_instance WHERE run_id = %s", (run_id,),
    )
    by_task: dict[str, list[tuple]] = {}
    for task_id, map_index, ti_state, pool, hostname in instances:
        by_task.setdefault(task_id, []).append((map_index, ti_state, pool, hostname))
    for task_id in ("extract", "validate", "ner", "risk_load"):  # one task per chunk (two chunks of one day)
        assert sorted(i[0] for i in by_task[task_id]) == [0, 1], (task_id, by_task[task_id])
        assert all(i[1] == "success" and i[3] for i in by_task[task_id]), (task_id, by_task[task_id])
    assert {i[2] for i in by_task["extract"]} == {"backfill"}

    from pipeline.warehouse.postgres import PostgresWarehouse

    with PostgresWarehouse(dep.warehouse_url) as warehouse:
        done = warehouse.query(
            "SELECT ds, status FROM ehr.pipeline_runs WHERE stage = 'backfill.load' ORDER BY ds").to_pylist()
        admissions = warehouse.query("SELECT count(*) AS n FROM ehr.admissions").column(0)[0].as_py()
    assert [(r["ds"].isoformat(), r["status"]) for r in done] == [("2026-01-01", "success"), ("2026-01-02", "success")]
    assert admissions > 0
