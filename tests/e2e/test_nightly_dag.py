"""End to end: the real ``ehr_nightly`` DAG (``airflow dags test``, SQLite metadata) on a generated dataset.

The risk model is trained on the generated history (seconds); the NER model is a tiny random-weight
token classifier (a real Hugging Face checkpoint folder), so this checks wiring, offsets and counts,
not accuracy (``ehr-pipeline eval-ner`` does that).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from pipeline import tasks
from pipeline.cli import DEMO_START, prepare_airflow, run_dag_day
from pipeline.config import load_settings
from pipeline.synth import generate
from tests.nlp.conftest import build_tiny_model

pytestmark = pytest.mark.slow

DAYS = [DEMO_START, DEMO_START + timedelta(days=1)]
HISTORY_DAYS = 180


def _counts(db: Path, table: str) -> dict[date, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return dict(con.execute(f"SELECT ds, count(*) FROM ehr.{table} GROUP BY ds").fetchall())
    finally:
        con.close()


def _source_admissions_per_day(source: Path) -> dict[date, int]:
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT CAST(dischtime AS DATE), count(*) FROM read_csv('{source}/hosp/admissions.csv.gz', all_varchar=true) "
        "GROUP BY 1"
    ).fetchall()
    return {date.fromisoformat(str(d)): n for d, n in rows}


@pytest.fixture(scope="module")
def mimic4_run(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("e2e4")
    settings = load_settings(workdir=workdir)
    generate(settings.source_dir, layout="mimic4", patients=400, start=DEMO_START, days=len(DAYS),
             history_days=HISTORY_DAYS, seed=11)
    tasks.ingest_history(DEMO_START - timedelta(days=HISTORY_DAYS), DEMO_START - timedelta(days=1), settings=settings)
    tasks.train_risk_model(settings, settings.risk_model_dir)
    build_tiny_model(settings.ner_model_dir)
    env = prepare_airflow(settings)
    for day in DAYS:
        run_dag_day(env, day)
    return settings, env


def test_e2e_dag_loads_every_table_for_each_day(mimic4_run) -> None:
    settings, _ = mimic4_run
    db = settings.workdir_abs / "warehouse.duckdb"
    source = _source_admissions_per_day(settings.source_dir)
    admissions = _counts(db, "admissions")
    quarantined = duckdb.connect(str(db), read_only=True).execute(
        "SELECT ds, count(*) FROM ehr.quarantine WHERE source_table = 'admissions' GROUP BY ds").fetchall()
    q = dict(quarantined)
    for day in DAYS:
        assert admissions.get(day, 0) > 0
        assert admissions[day] + q.get(day, 0) == source[day]  # every source admission of the day is accounted for
        for table in ("patients", "diagnoses", "labs", "prescriptions", "notes", "admission_risk",
                      "validation_results", "pipeline_runs", "note_entities"):
            assert _counts(db, table).get(day, 0) > 0, (table, day)


def test_e2e_conservation_and_run_records(mimic4_run) -> None:
    settings, _ = mimic4_run
    con = duckdb.connect(str(settings.workdir_abs / "warehouse.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT ds, table_name, rows_in, rows_out, rows_quarantined, status FROM ehr.pipeline_runs "
        "WHERE stage = 'validate' AND ds >= ?", [DAYS[0]]).fetchall()
    assert len(rows) == 6 * len(DAYS)
    for _ds, _table, rows_in, rows_out, rows_q, status in rows:
        assert status == "success"
        assert rows_in == rows_out + rows_q
    stages = {r[0] for r in con.execute("SELECT DISTINCT stage FROM ehr.pipeline_runs WHERE ds = ?", [DAYS[0]]).fetchall()}
    assert {"extract", "validate", "load", "report"} <= stages
    assert any(s.startswith("ner[") for s in stages) and any(s.startswith("risk[") for s in stages)
    report = json.loads((settings.reports_dir / f"ds={DAYS[0].isoformat()}.json").read_text())
    assert report["warehouse_rows"]["admissions"] > 0
    assert (settings.data_docs_dir / "index.html").is_file()


def test_e2e_entities_have_exact_offsets_and_model(mimic4_run) -> None:
    settings, _ = mimic4_run
    con = duckdb.connect(str(settings.workdir_abs / "warehouse.duckdb"), read_only=True)
    bad = con.execute(
        "SELECT count(*) FROM ehr.note_entities e JOIN ehr.notes n USING (note_id) "
        "WHERE substr(n.text, e.start_char + 1, e.end_char - e.start_char) <> e.text").fetchone()[0]
    assert bad == 0
    assert con.execute("SELECT count(*) FROM ehr.note_entities WHERE model_name IS NULL OR model_version IS NULL"
                       ).fetchone()[0] == 0


def test_e2e_one_risk_row_per_discharged_admission(mimic4_run) -> None:
    settings, _ = mimic4_run
    con = duckdb.connect(str(settings.workdir_abs / "warehouse.duckdb"), read_only=True)
    for day in DAYS:
        n_adm = con.execute("SELECT count(*) FROM ehr.admissions WHERE ds = ?", [day]).fetchone()[0]
        n_risk, lo, hi = con.execute(
            "SELECT count(DISTINCT hadm_id), min(least(readmit_30d_prob, mortality_prob)), "
            "max(greatest(readmit_30d_prob, mortality_prob)) FROM ehr.admission_risk WHERE ds = ?", [day]).fetchone()
        assert n_risk == n_adm
        assert 0.0 <= lo <= hi <= 1.0
    high = con.execute("SELECT count(*) FROM ehr.v_high_risk_admissions").fetchone()[0]
    assert high >= 0


def test_e2e_rerun_is_idempotent(mimic4_run) -> None:
    settings, env = mimic4_run
    db = settings.workdir_abs / "warehouse.duckdb"
    tables = ("patients", "admissions", "diagnoses", "labs", "prescriptions", "notes", "note_entities",
              "admission_risk", "quarantine", "validation_results", "pipeline_runs")
    before = {t: _counts(db, t) for t in tables}
    run_dag_day(env, DAYS[0])
    after = {t: _counts(db, t) for t in tables}
    assert after == before


def test_e2e_mimic3_layout(tmp_path: Path) -> None:
    """The same DAG on a MIMIC-III folder (EHR_SOURCE_LAYOUT=mimic3); NER and risk off to keep it short."""
    settings = load_settings(workdir=tmp_path, source_layout="mimic3")
    generate(settings.source_dir, layout="mimic3", patients=150, start=DEMO_START, days=2, history_days=30, seed=5)
    env = prepare_airflow(settings)
    env.update({"EHR_SOURCE_LAYOUT": "mimic3", "EHR_NER_ENABLED": "false", "EHR_RISK_ENABLED": "false"})
    for day in DAYS:
        run_dag_day(env, day)
    db = tmp_path / "warehouse.duckdb"
    for table in ("patients", "admissions", "diagnoses", "labs", "prescriptions", "notes"):
        counts = _counts(db, table)
        assert all(counts.get(day, 0) > 0 for day in DAYS), (table, counts)
    con = duckdb.connect(str(db), read_only=True)
    assert set(r[0] for r in con.execute("SELECT DISTINCT icd_version FROM ehr.diagnoses").fetchall()) == {9}
