"""The real ``ehr_nightly`` DAG on this machine, as ``ehr-pipeline demo`` and the end-to-end tests run it.

Airflow runs from ``<workdir>/airflow`` with SQLite metadata and our ``dags/`` folder; each day is one
``airflow dags test`` (the scheduler's code path, in one process, no services). The DAG reads the source
folder, so the demo dataset it needs is generated here too, once per set of parameters.

This sits above the DAG (it drives it through the Airflow CLI), so it is not part of ``pipeline.tasks``,
which the DAG calls; and it generates data (``pipeline.synth``), which no task may do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

from pipeline.config import DAGS_DIR, Settings

#: The first day of the demo (and of the end-to-end tests' generated data); history comes before it.
DEMO_START = date(2026, 1, 1)


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for the Airflow CLI: SQLite metadata under <workdir>/airflow, our dags folder."""
    home = settings.airflow_home
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "EHR_WORKDIR": str(settings.workdir_abs),
            "EHR_SOURCE_PATH": str(settings.source_dir),
            "EHR_SOURCE_LAYOUT": settings.source_layout,
            "EHR_WAREHOUSE_URL": settings.warehouse,
            "EHR_NER_MODEL_PATH": str(settings.ner_model_dir),
            "EHR_RISK_MODEL_PATH": str(settings.risk_model_dir),
            "PYTHONWARNINGS": "ignore",
        }
    )
    if (settings.phi_model_dir / "config.json").is_file():  # set only when present: a set path must load
        env["EHR_PHI_MODEL_PATH"] = str(settings.phi_model_dir)
    return env


def _airflow(env: dict[str, str], *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("airflow")
    cmd = [str(exe) if exe.exists() else "airflow", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")
    return proc


def prepare_airflow(settings: Settings) -> dict[str, str]:
    """Migrate the SQLite metadata once and set the pools of the NER and risk tasks and of the history backfill's
    chunks (one ``airflow pools import``: each Airflow CLI call costs seconds of start-up); returns the
    environment."""
    env = airflow_env(settings)
    if not (settings.airflow_home / "airflow.db").exists():
        _airflow(env, "db", "migrate")
    pools = settings.airflow_home / "pools.json"
    pools.write_text(json.dumps(airflow_pools(settings), indent=2))
    _airflow(env, "pools", "import", str(pools))
    return env


def airflow_pools(settings: Settings) -> dict[str, dict[str, object]]:
    """The pools the DAGs use, in ``airflow pools import`` form (pool → slots, description)."""
    return {
        settings.gpu_pool: {"slots": settings.gpu_pool_slots, "description": "NER and risk tasks"},
        settings.backfill_pool: {"slots": settings.backfill_pool_slots, "description": "history backfill chunks"},
    }


def run_dag_day(env: dict[str, str], day: date) -> None:
    """Run the real ``ehr_nightly`` DAG for one day with ``airflow dags test`` (SQLite metadata)."""
    proc = _airflow(env, "dags", "test", "ehr_nightly", day.isoformat(), check=False)
    if proc.returncode != 0 or "state=failed" in proc.stdout + proc.stderr:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
        raise RuntimeError(f"ehr_nightly failed for {day}:\n{tail}")


def _generated_marker(settings: Settings) -> Path:
    return settings.source_dir / "_generated.json"


def ensure_source(settings: Settings, *, patients: int, days: int, history_days: int, seed: int, layout: str,
                  progress: Callable[[int, int], None] | None = None) -> bool:
    """Generate the demo dataset unless the same one is already there; True when generated now.

    ``progress(patients_done, patients_total)`` is called while generating (never when the source is reused).
    """
    from pipeline.synth import generate

    wanted = {"patients": patients, "days": days, "history_days": history_days, "seed": seed, "layout": layout,
              "start": DEMO_START.isoformat()}
    marker = _generated_marker(settings)
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return False
    generate(settings.source_dir, layout=layout, patients=patients, start=DEMO_START, days=days,
             history_days=history_days, seed=seed, progress=progress)
    marker.write_text(json.dumps(wanted))
    return True
