"""A source without optional modules runs: hosp-only (no MIMIC-IV-Note, no icu) is a warning, not a failure."""

from __future__ import annotations

import json
from datetime import date

import duckdb
import pytest

from pipeline.config import load_settings
from pipeline.sources import SourceError
from pipeline.synth import generate
from pipeline.tasks import history, nightly

START = date(2026, 1, 1)


@pytest.fixture(scope="module")
def hosp_only(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("hosp_only") / "src"
    generate(folder, patients=40, start=START, days=2, history_days=20, seed=4, modules=("hosp",))
    return folder


@pytest.mark.slow
def test_optional_modules_hosp_only_source_runs_with_warnings(tmp_path, hosp_only) -> None:
    # NER stays enabled (the default) and no NER model exists: with no notes there is nothing for it to do
    settings = load_settings(workdir=tmp_path / "w", source_path=hosp_only, risk_enabled=False)
    history.ingest_history(date(2025, 12, 1), START, settings=settings)
    summary = nightly.run_day(date(2026, 1, 2), settings=settings, risk_enabled=False)
    assert summary["warehouse_rows"]["notes"] == 0 and summary["warehouse_rows"]["admissions"] > 0
    assert summary["warehouse_rows"]["icu_stays"] == 0
    con = duckdb.connect(str(tmp_path / "w" / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM ehr.procedures").fetchone()[0] > 0  # hosp tables still load
    runs = con.execute("SELECT stage, table_name, status, detail FROM ehr.pipeline_runs WHERE ds = ? "
                       "AND stage IN ('extract', 'validate') AND table_name IN ('notes', 'icu_stays')",
                       [date(2026, 1, 2)]).fetchall()
    assert {(stage, table) for stage, table, _, _ in runs} == {
        ("extract", "notes"), ("validate", "notes"), ("extract", "icu_stays"), ("validate", "icu_stays")}
    for _stage, table, status, detail in runs:
        assert status == "success"
        (warning,) = json.loads(detail)["warnings"]
        if table == "notes":
            assert "note module is not in the source" in warning and "NER" in warning
        else:
            assert "icu module is not in the source" in warning
    assert not con.execute("SELECT count(*) FROM ehr.pipeline_runs WHERE stage LIKE 'ner%'").fetchone()[0]


def test_optional_modules_validate_maps_no_ner_parts_without_notes(tmp_path, hosp_only) -> None:
    settings = load_settings(workdir=tmp_path / "w", source_path=hosp_only)
    nightly.extract(date(2026, 1, 2), run_id="r1", settings=settings)
    parts = nightly.validate(date(2026, 1, 2), run_id="r1", settings=settings)
    assert parts["notes_parts"] == [] and parts["admission_parts"]


def test_optional_modules_required_notes_fail_at_extract(tmp_path, hosp_only) -> None:
    settings = load_settings(workdir=tmp_path / "w", source_path=hosp_only, require_notes=True)
    with pytest.raises(SourceError, match="EHR_REQUIRE_NOTES=true, but the note module is not in the source"):
        nightly.extract(date(2026, 1, 2), run_id="r1", settings=settings)


def test_optional_modules_radiology_notes_are_read_with_their_type(tmp_path) -> None:
    from pipeline.sources import extract_range, open_source

    folder = tmp_path / "src"
    generate(folder, patients=30, start=START, days=2, history_days=20, seed=4, radiology=True)
    bulk = extract_range(open_source("mimic4", folder), date(2025, 12, 1), date(2026, 1, 2))
    kinds = set(bulk.tables["notes"].column("note_type").to_pylist())
    assert kinds == {"DS", "RR"}
    assert not bulk.absent
