"""Known errors print one line (kind, what failed, what to do) and exit non-zero without a traceback;
``--debug`` / ``EHR_DEBUG=1`` shows it, and an unexpected error always keeps it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from pipeline import cli
from tests.sources.conftest import LABS, write_folder

D2 = date(2026, 1, 2)


def _invoke(args: list[str]):
    return CliRunner().invoke(cli.app, args)


def _one_error_line(result, kind: str) -> str:
    """The error line of ``result``; there is one, and no traceback in the output."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("error (")]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error ({kind}): "), lines[0]
    assert "Traceback" not in result.output and "File \"" not in result.output
    return lines[0]


def test_cli_errors_missing_source_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_SOURCE_PATH", str(tmp_path / "nowhere"))
    result = _invoke(["run", "--ds", "2026-01-02", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 1
    line = _one_error_line(result, "source")
    assert "source folder not found" in line and "EHR_SOURCE_PATH" in line


def test_cli_errors_missing_risk_model_names_the_stage_and_the_fix(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_SOURCE_PATH", str(write_folder(tmp_path / "src")))
    result = _invoke(["run", "--ds", D2.isoformat(), "--workdir", str(tmp_path / "w"), "--skip-ner"])
    assert result.exit_code == 1
    line = _one_error_line(result, "pipeline")
    assert "not started, nothing extracted: no risk model" in line and "ehr-pipeline train-risk" in line


def test_cli_errors_failed_bulk_batch_points_at_its_evidence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a duplicated lab row with a different value: quarantined, and any quarantine fails the batch here
    labs = LABS + LABS.splitlines()[2].replace(",1.1,1.1,", ",9.9,9.9,") + "\n"
    monkeypatch.setenv("EHR_SOURCE_PATH", str(write_folder(tmp_path / "src", _with_labs(labs))))
    monkeypatch.setenv("EHR_MAX_QUARANTINE_SHARE", "0")
    monkeypatch.setenv("EHR_MIN_ROWS_FOR_SHARE_CHECK", "0")
    workdir = tmp_path / "w"
    result = _invoke(["backfill", "--start", "2025-12-01", "--end", "2026-01-31", "--bulk", "--workdir", str(workdir)])
    assert result.exit_code == 1
    # the backfill lists its failed chunk (the other chunk, December, has no rows and is not planned)
    line = " ".join(result.output.split())
    assert "failed 2026-01-01..2026-01-31: validate" in line and "the batch failed" in line, line
    assert "table=labs" in line and "ehr.quarantine" in line and "ds=2026-01-31" in line
    # the evidence is where the message points
    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    quarantined = con.execute("SELECT source_table, rule FROM ehr.quarantine WHERE ds BETWEEN ? AND ?",
                              [date(2026, 1, 1), date(2026, 1, 31)]).fetchall()
    assert quarantined == [("labs", "duplicate_key"), ("labs", "duplicate_key")]
    assert con.execute("SELECT count(*) FROM ehr.validation_results WHERE ds = ? AND NOT success",
                       [date(2026, 1, 31)]).fetchone()[0] >= 1
    statuses = con.execute("SELECT DISTINCT status FROM ehr.pipeline_runs WHERE stage = 'backfill.validate'").fetchall()
    assert statuses == [("failed",)]
    assert con.execute("SELECT count(*) FROM ehr.labs").fetchone()[0] == 0  # nothing loaded


def _with_labs(labs: str) -> dict[str, str | bytes]:
    from tests.sources.conftest import FILES

    return {**FILES, "hosp/labevents.csv.gz": labs}


def test_cli_errors_bad_setting_is_a_configuration_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_SOURCE_LAYOUT", "mimic5")
    result = _invoke(["run", "--ds", "2026-01-02", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "EHR_SOURCE_LAYOUT" in result.output and "Traceback" not in result.output


def test_cli_errors_required_notes_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.sources.conftest import FILES

    hosp_only = {rel: text for rel, text in FILES.items() if not rel.startswith("note/")}
    monkeypatch.setenv("EHR_SOURCE_PATH", str(write_folder(tmp_path / "src", hosp_only)))
    monkeypatch.setenv("EHR_REQUIRE_NOTES", "true")
    result = _invoke(["run", "--ds", D2.isoformat(), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 1
    line = _one_error_line(result, "source")
    assert "EHR_REQUIRE_NOTES=true" in line and "note module is not in the source" in line


@pytest.mark.parametrize(("args", "option"), [
    (["generate", "--out", "x", "--start", "2024-02-30"], "--start"),
    (["run", "--ds", "2026-13-01"], "--ds"),
    (["backfill", "--start", "2026-01-02", "--end", "2026-01-01"], "--end"),
    (["counts", "--start", "yesterday"], "--start"),
    (["generate", "--out", "x", "--modules", "icu"], "--modules"),
])
def test_cli_errors_bad_option_is_named(args: list[str], option: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _invoke(args)
    assert result.exit_code == 2
    assert option in result.output and "Traceback" not in result.output
    assert not isinstance(result.exception, ValueError)


def test_cli_errors_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.sources import SourceError

    monkeypatch.setenv("EHR_SOURCE_PATH", str(tmp_path / "nowhere"))
    result = _invoke(["--debug", "run", "--ds", "2026-01-02", "--workdir", str(tmp_path / "w")])
    assert isinstance(result.exception, SourceError) and result.exit_code == 1
    monkeypatch.setenv("EHR_DEBUG", "1")
    result = _invoke(["run", "--ds", "2026-01-02", "--workdir", str(tmp_path / "w")])
    assert isinstance(result.exception, SourceError)


def test_cli_errors_unexpected_error_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("pipeline.tasks.nightly.run_day", broken)
    result = _invoke(["run", "--ds", "2026-01-02", "--workdir", str(tmp_path / "w")])
    assert isinstance(result.exception, ZeroDivisionError)
    assert "error (" not in result.output
