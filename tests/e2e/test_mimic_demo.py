"""The real MIMIC-IV demo (tests/fixtures/mimic-iv-demo, ODbL: see its SOURCE.md), end to end with default settings.

As a new user runs it: the whole history seeded in one bulk batch, the risk model trained on it, then three
real discharge days through the nightly stages, all from the command line (no Airflow: the CLI calls the
same task functions). The demo is hosp-only (no MIMIC-IV-Note), so there is no NER model to train: notes,
NER and the note-based risk features are skipped and recorded as warnings.

Expected counts come from the fixture files themselves (DuckDB over the CSVs), not from the pipeline.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "mimic-iv-demo"
HISTORY = ("2110-01-01", "2202-12-31")
# real discharge days: two admissions and an ICU stay; four ICU stays and 16 procedures; the day
# (58 prescriptions, 14 of them components sharing a pharmacy_id)
NIGHTLY = (date(2142, 5, 15), date(2150, 4, 25), date(2192, 8, 6))
FILES = {
    "admissions": "hosp/admissions.csv.gz", "diagnoses": "hosp/diagnoses_icd.csv.gz",
    "procedures": "hosp/procedures_icd.csv.gz", "labs": "hosp/labevents.csv.gz",
    "prescriptions": "hosp/prescriptions.csv.gz", "icu_stays": "icu/icustays.csv.gz",
}
#: every real row quarantined, (table, rule, record_key): none. A change in the rules or the grains that
#: quarantines real rows shows up here as a list to read.
QUARANTINED: list[tuple[str, str, str]] = []

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _source() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name, rel in {**FILES, "patients": "hosp/patients.csv.gz"}.items():
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_csv('{DEMO / rel}', all_varchar=true, header=true)")
    return con


def _source_rows(con: duckdb.DuckDBPyConnection, day: date) -> dict[str, int]:
    """Rows of each table the source files hold for one discharge day (admission-dated, labs by charttime)."""
    adm = "(SELECT hadm_id FROM admissions WHERE dischtime::timestamp::date = $day)"
    queries = {
        "admissions": f"SELECT count(*) FROM admissions WHERE hadm_id IN {adm}",
        "patients": f"SELECT count(DISTINCT subject_id) FROM admissions WHERE hadm_id IN {adm}",
        "diagnoses": f"SELECT count(*) FROM diagnoses WHERE hadm_id IN {adm}",
        "procedures": f"SELECT count(*) FROM procedures WHERE hadm_id IN {adm}",
        "prescriptions": f"SELECT count(*) FROM prescriptions WHERE hadm_id IN {adm}",
        "icu_stays": f"SELECT count(*) FROM icu_stays WHERE hadm_id IN {adm}",
        "labs": "SELECT count(*) FROM labs WHERE charttime::timestamp::date = $day",
    }
    return {name: con.execute(q, {"day": day}).fetchone()[0] for name, q in queries.items()}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("demo")
    env = {"EHR_SOURCE_PATH": str(DEMO), "EHR_WORKDIR": str(workdir)}
    runner = CliRunner()
    # the demo's 275 stays are spread over ~90 shifted years: one chunk for the whole history (monthly chunks
    # would validate ~200 tiny batches one by one)
    steps = [["backfill", "--start", HISTORY[0], "--end", HISTORY[1], "--bulk", "--chunk", "40000 days"],
             ["train-risk"]]
    steps += [["run", "--ds", day.isoformat()] for day in NIGHTLY]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for args in steps:
            result = runner.invoke(app, args)
            assert result.exit_code == 0, (args, result.output, result.exception)
    return workdir


def test_mimic_demo_every_real_row_loaded_or_quarantined(demo_run: Path) -> None:
    wh = duckdb.connect(str(demo_run / "warehouse.duckdb"), read_only=True)
    src = _source()
    # the whole history: every source row is in the warehouse or in quarantine, and at least 99 % loaded
    for name in FILES:
        in_source = src.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        loaded = wh.execute(f"SELECT count(*) FROM ehr.{name}").fetchone()[0]
        quarantined = wh.execute("SELECT count(*) FROM ehr.quarantine WHERE source_table = ?", [name]).fetchone()[0]
        assert loaded + quarantined == in_source, name
        assert loaded >= 0.99 * in_source, (name, loaded, in_source)
    # prescriptions keep every component of an order: rows sharing a pharmacy_id are all there
    extra = wh.execute("SELECT count(*) - count(DISTINCT prescription_id) FROM ehr.prescriptions").fetchone()[0]
    assert extra == 2862  # rows beyond one per pharmacy_id in the demo: the BASE and ADDITIVE components
    assert wh.execute("SELECT count(DISTINCT subject_id) FROM ehr.patients").fetchone()[0] == 100
    # procedure titles come from the source's d_icd_procedures
    assert wh.execute("SELECT count(*) FROM ehr.procedures WHERE long_title IS NULL").fetchone()[0] == 0
    assert wh.execute("SELECT count(*) FROM ehr.notes").fetchone()[0] == 0
    got = wh.execute("SELECT source_table, rule, record_key FROM ehr.quarantine "
                     "ORDER BY source_table, rule, record_key").fetchall()
    assert got == QUARANTINED


def test_mimic_demo_nightly_days_conserve_rows(demo_run: Path) -> None:
    wh = duckdb.connect(str(demo_run / "warehouse.duckdb"), read_only=True)
    src = _source()
    for day in NIGHTLY:
        expected = _source_rows(src, day)
        for name, n in expected.items():
            loaded = wh.execute(f"SELECT count(*) FROM ehr.{name} WHERE ds = ?", [day]).fetchone()[0]
            quarantined = wh.execute("SELECT count(*) FROM ehr.quarantine WHERE ds = ? AND source_table = ?",
                                     [day, name]).fetchone()[0]
            assert loaded + quarantined == n, (day, name, loaded, quarantined, n)
            assert loaded >= 0.99 * n, (day, name)
        assert expected["admissions"] > 0
        assert wh.execute("SELECT count(*) FROM ehr.admission_risk WHERE ds = ?", [day]).fetchone()[0] == \
            expected["admissions"]
        statuses = dict(wh.execute("SELECT stage, min(status) FROM ehr.pipeline_runs WHERE ds = ? GROUP BY 1",
                                   [day]).fetchall())
        # no notes module: no NER task ran, and every stage succeeded
        assert set(statuses) == {"extract", "validate", "risk[part-0]", "load", "report"}, statuses
        assert set(statuses.values()) == {"success"}


def test_mimic_demo_missing_note_module_is_a_recorded_warning(demo_run: Path) -> None:
    wh = duckdb.connect(str(demo_run / "warehouse.duckdb"), read_only=True)
    rows = wh.execute("SELECT stage, ds, detail FROM ehr.pipeline_runs WHERE table_name = 'notes' "
                      "AND status = 'success' AND stage IN ('extract', 'validate') "
                      "ORDER BY stage, ds").fetchall()
    stages = {(stage, ds) for stage, ds, _ in rows}
    history = {ds for stage, ds in stages if ds not in NIGHTLY}
    # the backfill recorded it on every history day with rows, the nightly runs on theirs
    assert len(history) > 1000 and {(s, d) for s in ("extract", "validate") for d in history} <= stages
    assert {("extract", d) for d in NIGHTLY} | {("validate", d) for d in NIGHTLY} <= stages
    for _, _, detail in rows:
        assert "note module is not in the source" in detail and "NER" in detail, detail
