"""End to end: the real ``ehr_nightly`` DAG (``airflow dags test``, SQLite metadata) on a generated dataset.

The risk model is trained on the generated history (seconds); the NER model is a tiny random-weight
token classifier (a real Hugging Face checkpoint folder), so this checks wiring, offsets and counts,
not accuracy (``ehr-pipeline eval-ner`` does that).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from pipeline.airflow_local import DEMO_START, prepare_airflow, run_dag_day
from pipeline.config import load_settings
from pipeline.contracts import INPUT_TABLES
from pipeline.synth import generate
from pipeline.tasks import history
from pipeline.validate.config import DEFAULT_SUITES_DIR
from pipeline.validate.suites import load_suite
from tests.nlp.conftest import build_tiny_model

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAYS = [DEMO_START, DEMO_START + timedelta(days=1)]
HISTORY_DAYS = 180
SSN = "531-62-4489"
MANGLED = "10/23/64 21:09"  # a spreadsheet-rewritten timestamp


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


def _append_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """Append rows (by column name) to a generated .csv.gz, quoting like the generator does."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        content = fh.read()
    header = next(csv.reader(io.StringIO(content)))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[row.get(c, "") for c in header] for row in rows])
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        fh.write(content + out.getvalue())


def _plant_bad_rows(source: Path) -> dict[date, set[tuple[str, str, str]]]:
    """Per demo day: a note with an SSN and a lab with a mangled storetime, copied from real rows of the day.

    Returns the (source_table, record_key, rule) each must be quarantined under.
    """
    con = duckdb.connect()
    labs_csv, notes_csv = source / "hosp" / "labevents.csv.gz", source / "note" / "discharge.csv.gz"
    next_lab = con.sql(f"SELECT max(TRY_CAST(labevent_id AS BIGINT)) FROM read_csv('{labs_csv}', all_varchar=true)"
                       ).fetchall()[0][0]
    planted: dict[date, set[tuple[str, str, str]]] = {}
    labs, notes = [], []
    for n, day in enumerate(DAYS, start=1):
        lab = con.sql(
            f"SELECT * FROM read_csv('{labs_csv}', all_varchar=true) WHERE TRY_CAST(charttime AS DATE) = $day "
            "AND hadm_id IS NOT NULL ORDER BY labevent_id LIMIT 1", params={"day": day}).to_arrow_table().to_pylist()[0]
        note = con.sql(
            f"SELECT * FROM read_csv('{notes_csv}', all_varchar=true) WHERE TRY_CAST(charttime AS DATE) = $day "
            "ORDER BY note_id LIMIT 1", params={"day": day}).to_arrow_table().to_pylist()[0]
        lab_id, note_id = str(next_lab + n), f"{note['subject_id']}-DS-9{n}"
        labs.append({**lab, "labevent_id": lab_id, "storetime": MANGLED})
        notes.append({**note, "note_id": note_id, "note_seq": f"9{n}",
                      "text": f"Brief Hospital Course: uneventful. Patient SSN {SSN}, follow up as planned."})
        planted[day] = {("labs", lab_id, "unparseable_timestamp"), ("notes", note_id, "phi_suspected")}
    _append_rows(labs_csv, labs)
    _append_rows(notes_csv, notes)
    return planted


@pytest.fixture(scope="module")
def mimic4_run(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("e2e4")
    settings = load_settings(workdir=workdir)
    # Not messy=True: its labs without a charttime currently make extraction fail (a null cast to the
    # non-nullable contract) instead of being set aside; the rows planted here are the known bad inputs.
    generate(settings.source_dir, layout="mimic4", patients=400, start=DEMO_START, days=len(DAYS),
             history_days=HISTORY_DAYS, seed=11)
    planted = _plant_bad_rows(settings.source_dir)
    history.ingest_history(DEMO_START - timedelta(days=HISTORY_DAYS), DEMO_START - timedelta(days=1), settings=settings)
    history.train_risk_model(settings, settings.risk_model_dir)
    build_tiny_model(settings.ner_model_dir)
    env = prepare_airflow(settings)
    # lower bands than the default so a small cohort has high-risk admissions for the view check
    env.update({"EHR_RISK_BAND_MEDIUM": "0.05", "EHR_RISK_BAND_HIGH": "0.12"})
    for day in DAYS:
        run_dag_day(env, day)
    return settings, env, planted


def test_e2e_dag_loads_every_table_for_each_day(mimic4_run) -> None:
    settings, _, _ = mimic4_run
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
    settings, _, _ = mimic4_run
    con = duckdb.connect(str(settings.workdir_abs / "warehouse.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT ds, table_name, rows_in, rows_out, rows_quarantined, status FROM ehr.pipeline_runs "
        "WHERE stage = 'validate' AND ds >= ?", [DAYS[0]]).fetchall()
    assert len(rows) == len(INPUT_TABLES) * len(DAYS)
    for _ds, _table, rows_in, rows_out, rows_q, status in rows:
        assert status == "success"
        assert rows_in == rows_out + rows_q
    stages = {r[0] for r in con.execute("SELECT DISTINCT stage FROM ehr.pipeline_runs WHERE ds = ?", [DAYS[0]]).fetchall()}
    assert {"extract", "validate", "load", "report"} <= stages
    assert any(s.startswith("ner[") for s in stages) and any(s.startswith("risk[") for s in stages)
    report = json.loads((settings.reports_dir / f"ds={DAYS[0].isoformat()}.json").read_text())
    assert report["warehouse_rows"]["admissions"] > 0
    assert report["data_docs"] == str(settings.data_docs_dir / "index.html")
    # the docs keep every day: one validation page per table and day
    for day in DAYS:
        pages = list((settings.data_docs_dir / "validations").glob(f"*/{day.isoformat()}__*/*/*.html"))
        assert len(pages) == len(INPUT_TABLES), (day, pages)


def test_e2e_quarantine_and_validation_results_are_filled_and_add_up(mimic4_run) -> None:
    settings, _, planted = mimic4_run
    con = duckdb.connect(str(settings.workdir_abs / "warehouse.duckdb"), read_only=True)
    for day in DAYS:
        quarantined = set(con.execute("SELECT source_table, record_key, rule FROM ehr.quarantine WHERE ds = ?",
                                      [day]).fetchall())
        assert planted[day] <= quarantined, (day, planted[day] - quarantined)
        assert SSN not in repr(con.execute("SELECT * FROM ehr.quarantine WHERE ds = ?", [day]).fetchall())
        # every expectation of every suite (plus the pipeline's own checks) has a result for every table
        for table in INPUT_TABLES:
            labels = {r[0] for r in con.execute(
                "SELECT expectation FROM ehr.validation_results WHERE ds = ? AND table_name = ?", [day, table]
            ).fetchall()}
            suite = load_suite(DEFAULT_SUITES_DIR, table).enabled({"phi_gate": True})
            assert {e.label for e in suite.expectations} <= labels, (day, table)
            assert {"pipeline:expect_column_to_exist(contract)", "pipeline:expect_column_values_to_be_of_type(contract)"
                    } <= labels
        # conservation per table: extracted = validated in = passed + quarantined, and that is what was loaded
        for table, rows_in, rows_out, rows_q in con.execute(
            "SELECT table_name, rows_in, rows_out, rows_quarantined FROM ehr.pipeline_runs "
            "WHERE ds = ? AND stage = 'validate'", [day]
        ).fetchall():
            extracted = con.execute("SELECT rows_in FROM ehr.pipeline_runs WHERE ds = ? AND stage = 'extract' "
                                    "AND table_name = ?", [day, table]).fetchone()[0]
            loaded = con.execute(f"SELECT count(*) FROM ehr.{table} WHERE ds = ?", [day]).fetchone()[0]
            in_quarantine = con.execute("SELECT count(*) FROM ehr.quarantine WHERE ds = ? AND source_table = ?",
                                        [day, table]).fetchone()[0]
            assert extracted == rows_in == rows_out + rows_q, (day, table)
            assert (loaded, in_quarantine) == (rows_out, rows_q), (day, table)


def test_e2e_entities_have_exact_offsets_and_model(mimic4_run) -> None:
    settings, _, _ = mimic4_run
    con = duckdb.connect(str(settings.workdir_abs / "warehouse.duckdb"), read_only=True)
    bad = con.execute(
        "SELECT count(*) FROM ehr.note_entities e JOIN ehr.notes n USING (note_id) "
        "WHERE substr(n.text, e.start_char + 1, e.end_char - e.start_char) <> e.text").fetchone()[0]
    assert bad == 0
    assert con.execute("SELECT count(*) FROM ehr.note_entities WHERE model_name IS NULL OR model_version IS NULL"
                       ).fetchone()[0] == 0


def test_e2e_one_risk_row_per_discharged_admission(mimic4_run) -> None:
    settings, _, _ = mimic4_run
    con = duckdb.connect(str(settings.workdir_abs / "warehouse.duckdb"), read_only=True)
    for day in DAYS:
        n_adm = con.execute("SELECT count(*) FROM ehr.admissions WHERE ds = ?", [day]).fetchone()[0]
        n_risk, lo, hi = con.execute(
            "SELECT count(DISTINCT hadm_id), min(least(readmit_30d_prob, mortality_prob)), "
            "max(greatest(readmit_30d_prob, mortality_prob)) FROM ehr.admission_risk WHERE ds = ?", [day]).fetchone()
        assert n_risk == n_adm
        assert 0.0 <= lo <= hi <= 1.0
    # the analyst view: exactly the high-band admissions discharged alive, each with its factors as JSON
    expected = set(con.execute(
        "SELECT r.ds, r.hadm_id FROM ehr.admission_risk r JOIN ehr.admissions a ON a.hadm_id = r.hadm_id "
        "AND a.ds = r.ds WHERE r.risk_band = 'high' AND a.deathtime IS NULL "
        "AND coalesce(a.hospital_expire_flag, 0) = 0").fetchall())
    view = con.execute("SELECT ds, hadm_id, top_factors FROM ehr.v_high_risk_admissions").fetchall()
    assert expected, "no high-band admission: the view check would be empty"
    assert len(view) == len(expected) and {(d, h) for d, h, _ in view} == expected
    for _ds, hadm_id, top_factors in view:
        factors = json.loads(top_factors)
        assert isinstance(factors, list) and factors, hadm_id
        assert all({"feature", "contribution"} <= set(f) for f in factors), hadm_id


def test_e2e_rerun_is_idempotent(mimic4_run) -> None:
    settings, env, _ = mimic4_run
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
    # against the source files: every admission discharged on a day, and its diagnoses, arrive that day
    src = duckdb.connect()
    folder = settings.source_dir
    rows = src.execute(
        f"SELECT CAST(a.DISCHTIME AS DATE), count(DISTINCT a.HADM_ID), count(d.ROW_ID) "
        f"FROM read_csv('{folder}/ADMISSIONS.csv', all_varchar=true) a "
        f"LEFT JOIN read_csv('{folder}/DIAGNOSES_ICD.csv', all_varchar=true) d ON d.HADM_ID = a.HADM_ID "
        "GROUP BY 1"
    ).fetchall()
    source_counts = {day: (admissions, diagnoses) for day, admissions, diagnoses in rows}
    con = duckdb.connect(str(db), read_only=True)
    for day in DAYS:
        loaded = con.execute(
            "SELECT (SELECT count(*) FROM ehr.admissions WHERE ds = ?) + (SELECT count(*) FROM ehr.quarantine "
            "WHERE ds = ? AND source_table = 'admissions'), (SELECT count(*) FROM ehr.diagnoses WHERE ds = ?) + "
            "(SELECT count(*) FROM ehr.quarantine WHERE ds = ? AND source_table = 'diagnoses')",
            [day, day, day, day],
        ).fetchone()
        assert tuple(loaded) == source_counts[day], (day, loaded, source_counts[day])
    assert set(r[0] for r in con.execute("SELECT DISTINCT icd_version FROM ehr.diagnoses").fetchall()) == {9}
