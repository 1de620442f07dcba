"""``ehr-pipeline backfill``: the dry run lists the plan, failed chunks make the command exit 1 and are named,
``--bulk`` is the structured-only seed, bad options are refused. (The backfill itself: tests/tasks/test_backfill.py.)"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import cli
from pipeline.tasks import backfill


def _invoke(tmp_path: Path, *args: str):
    return CliRunner().invoke(cli.app, ["backfill", "--workdir", str(tmp_path), *args])


def test_cli_backfill_dry_run_lists_every_chunk_and_runs_nothing(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "--start", "2026-01-01", "--end", "2026-02-10", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "2 of 2 chunks to run" in result.output
    assert "2026-01-01..2026-01-31" in result.output and "2026-02-01..2026-02-10" in result.output
    assert "extract validate ner risk load" in result.output and "never ran" in result.output
    assert not (tmp_path / "lake").exists()  # nothing staged, nothing extracted


def test_cli_backfill_exits_1_naming_the_failed_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def fake(first, last, **kwargs):
        seen.update(kwargs)
        ok = backfill.ChunkResult(backfill.Chunk(first, date(2026, 1, 31)), backfill.STAGES, "success", rows=10)
        bad = backfill.ChunkResult(backfill.Chunk(date(2026, 2, 1), last), backfill.STAGES, "failed",
                                   error="validate: DataQualityError: labs share too high")
        kwargs["on_plan"]([backfill.ChunkWork(ok.chunk, ok.stages, {}), backfill.ChunkWork(bad.chunk, bad.stages, {})])
        for r in (ok, bad):
            kwargs["on_chunk"](r)
        return [], backfill.BackfillOutcome([ok, bad])

    monkeypatch.setattr(backfill, "run_backfill", fake)
    result = _invoke(tmp_path, "--start", "2026-01-01", "--end", "2026-02-10", "--bulk", "--chunk", "week")
    assert result.exit_code == 1
    assert "1 chunk(s) done, 0 already done, 1 failed" in result.output
    assert "failed 2026-02-01..2026-02-10: validate: DataQualityError: labs share too high" in result.output
    assert seen["skip_ner"] and seen["skip_risk"] and seen["chunk"] == "week" and seen["reprocess"] == "missing"


@pytest.mark.parametrize("args,message", [
    (["--reprocess", "everything"], "expected one of missing, failed, stale, all"),
    (["--chunk", "fortnight"], "chunk size 'fortnight'"),
])
def test_cli_backfill_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = _invoke(tmp_path, "--start", "2026-01-01", "--end", "2026-01-31", "--dry-run", *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_backfill_without_models_says_how_to_seed(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    result = CliRunner().invoke(cli.app, ["backfill", "--workdir", str(tmp_path), "--start", "2026-01-01",
                                          "--end", "2026-01-02"], env={"EHR_SOURCE_PATH": str(source)})
    assert result.exit_code == 2 and "no NER model" in result.output and "--skip-ner" in result.output
