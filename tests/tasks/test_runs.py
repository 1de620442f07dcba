"""Run records (pipeline/tasks/runs.py): every stage run leaves its rows in ehr.pipeline_runs, failed or not."""

from __future__ import annotations

import json
import logging
import re
from datetime import date

import pytest

from pipeline.config import load_settings
from pipeline.tasks.runs import DataQualityError, new_run_id, recorded
from pipeline.warehouse import open_warehouse

DAY = date(2026, 1, 2)


def _runs(settings) -> list[tuple]:
    with open_warehouse(settings.warehouse) as wh:
        rows = wh.query("SELECT run_id, stage, table_name, status, rows_in, rows_out, rows_quarantined, detail "
                        "FROM ehr.pipeline_runs ORDER BY stage, table_name").to_pylist()
    return [tuple(r.values()) for r in rows]


def test_runs_new_run_id_names_the_day_and_is_unique() -> None:
    first, second = new_run_id(DAY), new_run_id(DAY, "history")
    assert re.fullmatch(r"cli__2026-01-02__[0-9a-f]{8}", first)
    assert second.startswith("history__2026-01-02__") and new_run_id(DAY) != first


def test_runs_recorded_writes_the_rows_of_a_successful_stage(tmp_path) -> None:
    settings = load_settings(workdir=tmp_path)
    with recorded(settings, "run-1", DAY, "validate") as rec:
        rec.add("labs", 3, 2, 1, {"warnings": ["W1"]})
        rec.add("notes", 0, 0, 0)
    assert _runs(settings) == [
        ("run-1", "validate", "labs", "success", 3, 2, 1, '{"warnings": ["W1"]}'),
        ("run-1", "validate", "notes", "success", 0, 0, 0, None),
    ]


def test_runs_recorded_failure_replaces_the_stage_rows_with_one_failed_row(tmp_path) -> None:
    settings = load_settings(workdir=tmp_path)
    with recorded(settings, "run-1", DAY, "ner[part-0]", "note_entities") as rec:
        rec.add("note_entities", 5, 9, 0)
    with pytest.raises(MemoryError, match="out of memory"), \
            recorded(settings, "run-2", DAY, "ner[part-0]", "note_entities") as rec:
        rec.add("note_entities", 5, 4, 0)  # counted before the failure: not kept
        raise MemoryError("out of memory")
    (row,) = _runs(settings)
    assert row[:7] == ("run-2", "ner[part-0]", "note_entities", "failed", None, None, None)
    assert json.loads(row[7]) == {"error": "MemoryError: out of memory"}


def test_runs_recorded_data_quality_failure_keeps_its_own_failed_rows(tmp_path) -> None:
    settings = load_settings(workdir=tmp_path)
    with pytest.raises(DataQualityError), recorded(settings, "run-1", DAY, "validate") as rec:
        rec.add("labs", 3, 2, 1, {"batch_failures": ["E103"]}, status="failed")
        rec.add("notes", 2, 2, 0, {"error": "batch failed on labs"}, status="failed")
        raise DataQualityError("validate: the batch failed")
    assert [(r[2], r[3], r[4]) for r in _runs(settings)] == [("labs", "failed", 3), ("notes", "failed", 2)]

    # a data-quality error with no rows of its own is recorded like any failure
    with pytest.raises(DataQualityError), recorded(settings, "run-2", DAY, "report"):
        raise DataQualityError("report: conservation check failed")
    report = [r for r in _runs(settings) if r[1] == "report"]
    assert [(r[2], r[3]) for r in report] == [("all", "failed")]
    assert "conservation check failed" in json.loads(report[0][7])["error"]


def test_runs_recorded_raises_the_stage_error_when_the_warehouse_is_gone(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(workdir=tmp_path, warehouse_url="postgresql://ehr@127.0.0.1:1/ehr")
    with caplog.at_level(logging.ERROR, logger="pipeline.tasks.runs"), \
            pytest.raises(ValueError, match="the stage's own error"), recorded(settings, "run-1", DAY, "load"):
        raise ValueError("the stage's own error")
    assert "could not record the failed run" in caplog.text
