"""``ehr-pipeline demo`` ends by printing the run report's path; ``ehr-pipeline report`` checks its range first.
(The report itself, rebuilt from the warehouse: tests/tasks/test_reporting.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import airflow_local, cli
from pipeline.tasks import history


def test_cli_demo_prints_the_run_report_path_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step of the demo stood in for (its parts have their own tests): what it prints at the end."""
    days: list = []
    monkeypatch.setattr(airflow_local, "ensure_source", lambda settings, **kwargs: False)
    monkeypatch.setattr(history, "ingest_history", lambda start, end, settings: {})
    monkeypatch.setattr(airflow_local, "prepare_airflow", lambda settings: {})
    monkeypatch.setattr(airflow_local, "run_dag_day", lambda env, day: days.append(day))
    workdir = tmp_path / "w"
    result = CliRunner().invoke(cli.app, ["demo", "--workdir", str(workdir), "--skip-models", "--days", "2"])
    assert result.exit_code == 0, result.output
    assert len(days) == 2
    assert result.output.splitlines()[-1] == f"run report: {workdir.resolve() / 'reports' / 'index.html'}"


def test_cli_report_refuses_an_empty_range(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.app, ["report", "--start", "2026-01-03", "--end", "2026-01-01",
                                          "--workdir", str(tmp_path)])
    assert result.exit_code == 2 and "--end is before --start" in result.output
    bad = CliRunner().invoke(cli.app, ["report", "--start", "yesterday", "--end", "2026-01-01",
                                       "--workdir", str(tmp_path)])
    assert bad.exit_code == 2 and "is not a date" in bad.output
