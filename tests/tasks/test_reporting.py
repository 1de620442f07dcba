"""The run report's I/O (pipeline/tasks/reporting.py) on a demo-like run (``report_run`` in tests/conftest.py):
a planted shift in the admission mix shows as drift in ehr.drift_metrics and in the report, the report holds no
note text, ``ehr-pipeline report`` rebuilds it from the warehouse alone, and EHR_ON_DRIFT=fail fails the task."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.contracts import INPUT_TABLES
from pipeline.tasks import nightly, reporting
from pipeline.tasks.runs import DataQualityError
from pipeline.warehouse import open_warehouse

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _drift(settings, sql_where: str = "", params: list | None = None) -> list[dict]:
    with open_warehouse(settings.warehouse) as wh:
        return wh.query(f"SELECT ds, metric, value, threshold, status, reference_start, reference_end, "
                        f"reference_rows, current_rows FROM ehr.drift_metrics {sql_where} ORDER BY ds, metric",
                        params or []).to_pylist()


def test_reporting_planted_shift_shows_as_drift_in_the_warehouse_and_the_report(report_run) -> None:
    settings, days, shifted = report_run["settings"], report_run["days"], report_run["shifted"]
    rows = _drift(settings)
    drifted = {(r["ds"], r["metric"]) for r in rows if r["status"] in ("warn", "fail")}
    assert (shifted, "risk_input:admission_type") in drifted
    assert not {d for d, _ in drifted} - {shifted}  # the days before the shift did not drift
    planted = next(r for r in rows if (r["ds"], r["metric"]) == (shifted, "risk_input:admission_type"))
    assert planted["status"] == "warn"  # EHR_ON_DRIFT defaults to warn: recorded and shown, the task succeeds
    assert planted["value"] > planted["threshold"] >= settings.drift_psi_threshold
    # the reference window: the drift_reference_days days before, history (admissions) included
    assert (shifted - planted["reference_start"]).days == settings.drift_reference_days
    assert (shifted - planted["reference_end"]).days == 1
    assert planted["reference_rows"] > 10 * planted["current_rows"] > 0
    # every metric family is computed once the reference has rows (day 1 has no earlier NER or risk rows)
    last = {r["metric"]: r for r in rows if r["ds"] == shifted}
    assert {m.split(":")[0] for m in last} == {"risk_input", "risk_output", "ner"}
    assert all(r["value"] is not None for r in last.values())
    assert {r["metric"] for r in rows if r["ds"] == days[0] and r["status"] == "too_few_rows"} >= {
        "ner:label", "risk_output:readmit_30d_prob"}

    reports = settings.reports_dir
    page = (reports / f"ds={shifted.isoformat()}.html").read_text()
    assert "Drift:" in page and "risk_input:admission_type" in page.split("Rows per table")[0]
    index = (reports / "index.html").read_text()
    assert f'href="ds={shifted.isoformat()}.html"' in index
    assert re.search(r"1 drifted</span>\s*risk_input:admission_type", index)
    summary = json.loads((reports / f"ds={shifted.isoformat()}.json").read_text())
    assert summary["drifted"] == ["risk_input:admission_type"]
    assert summary["report"] == str(reports / f"ds={shifted.isoformat()}.html")
    for day in days:
        assert (reports / f"ds={day.isoformat()}.html").is_file()
        for table in INPUT_TABLES:  # every input table of the contracts is on every page
            assert f'<td class="l">{table}</td>' in (reports / f"ds={day.isoformat()}.html").read_text()


def test_reporting_report_holds_no_note_text(report_run) -> None:
    settings = report_run["settings"]
    with open_warehouse(settings.warehouse) as wh:
        texts = wh.query("SELECT text FROM ehr.notes WHERE ds >= ? ORDER BY note_id LIMIT 200",
                         [report_run["days"][0]]).column("text").to_pylist()
        terms = wh.query("SELECT DISTINCT text FROM ehr.note_entities WHERE length(text) >= 12 LIMIT 200"
                         ).column("text").to_pylist()
    # windows from the middle of each note, and the longer entity spans
    windows = {t[len(t) // 2: len(t) // 2 + 32] for t in texts if len(t) > 64} | set(terms)
    assert len(windows) > 100
    files = [p for p in settings.reports_dir.rglob("*") if p.suffix in (".html", ".json")]
    assert len(files) >= 7
    for path in files:
        content = path.read_text(encoding="utf-8")
        leaked = [w for w in windows if w in content]
        assert not leaked, (path.name, leaked[:3])


def test_reporting_cli_rebuilds_the_report_from_the_warehouse_alone(report_run, tmp_path: Path) -> None:
    settings, days = report_run["settings"], report_run["days"]
    before = _drift(settings)
    # another workdir (no lake, no source, no earlier report) on the same warehouse
    result = CliRunner().invoke(app, ["report", "--start", days[0].isoformat(), "--end", days[-1].isoformat(),
                                      "--workdir", str(tmp_path / "elsewhere")],
                                env={"EHR_WAREHOUSE_URL": settings.warehouse})
    assert result.exit_code == 0, result.output
    index = tmp_path / "elsewhere" / "reports" / "index.html"
    assert f"run report: {index}" in result.output.splitlines()
    rebuilt = {p.name for p in index.parent.glob("*.html")}
    assert rebuilt == {"index.html", *(f"ds={d.isoformat()}.html" for d in days)}
    assert all((index.parent / src).is_file() for src in re.findall(r'<img src="([^"]+)"', index.read_text()))
    assert _drift(settings) == before  # recomputed from the warehouse: the same metrics
    bad = CliRunner().invoke(app, ["report", "--start", days[-1].isoformat(), "--end", days[0].isoformat()],
                             env={"EHR_WAREHOUSE_URL": settings.warehouse})
    assert bad.exit_code == 2 and "--end is before --start" in bad.output


def test_reporting_on_drift_fail_fails_the_report_task_after_writing_everything(report_run) -> None:
    settings, shifted = report_run["settings"], report_run["shifted"]
    strict = settings.model_copy(update={"on_drift": "fail"})
    try:
        with pytest.raises(DataQualityError, match=r"drift in risk_input:admission_type .*EHR_ON_DRIFT=fail"):
            nightly.report(shifted, run_id="run-strict", settings=strict)
        statuses = {r["metric"]: r["status"] for r in _drift(settings, "WHERE ds = ?", [shifted])}
        assert statuses["risk_input:admission_type"] == "fail"
        with open_warehouse(settings.warehouse) as wh:
            run = wh.query("SELECT status, detail FROM ehr.pipeline_runs WHERE ds = ? AND stage = 'report'",
                           [shifted]).to_pylist()
        assert [r["status"] for r in run] == ["failed"] and "EHR_ON_DRIFT=fail" in run[0]["detail"]
        assert "fail" in (settings.reports_dir / f"ds={shifted.isoformat()}.html").read_text()
    finally:  # put the shared run back as it was
        nightly.report(shifted, run_id="run-restore", settings=settings)


def test_reporting_counts_every_input_table_of_the_contracts() -> None:
    assert reporting.COUNTED_TABLES[: len(INPUT_TABLES)] == INPUT_TABLES
    assert "pipeline_runs" not in reporting.COUNTED_TABLES and "drift_metrics" not in reporting.COUNTED_TABLES
