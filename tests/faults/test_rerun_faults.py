"""Reruns and concurrent runs of one day (issue 13): every stage replaces all it owns of the day, enrichment
included; ``report`` cross-checks each stage's recorded counts against the warehouse; one run per day."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_settings
from pipeline.contracts import arrow_schema
from pipeline.tasks import nightly
from pipeline.tasks.daylock import DayLockedError, day_lock
from pipeline.tasks.runs import DataQualityError
from pipeline.warehouse import open_warehouse
from tests.sources.conftest import DISCHARGE, FILES, write_folder

D2 = date(2026, 1, 2)

# a stand-in NER: one entity per validated note (the real model is not what these tests are about)
FAKE_NER = nightly.PartStage(
    name="ner", reads="notes", writes="note_entities", counts=("notes", "entities"), model="NER",
    model_ready=lambda _dir: True, model_fix="", switch="EHR_NER_ENABLED",
)


def _fake_ner(ds, part, *, run_id, settings=None):
    def one_per_note(path: Path) -> nightly.PartOutput:
        notes = pq.read_table(path, schema=arrow_schema("notes"))
        rows = pa.Table.from_pylist([
            {"note_id": n["note_id"], "subject_id": n["subject_id"], "hadm_id": n["hadm_id"], "ds": n["ds"],
             "label": "PROBLEM", "text": "x", "start_char": 0, "end_char": 1, "section": None, "score": 0.9,
             "is_negated": False, "is_uncertain": False, "is_historical": False, "is_family": False,
             "is_hypothetical": False, "model_name": "fake", "model_version": "1", "run_id": run_id}
            for n in notes.to_pylist()], schema=arrow_schema("note_entities"))
        return nightly.PartOutput(rows, lambda: (notes.num_rows, {}))

    return nightly.map_part(FAKE_NER, ds, part, run_id=run_id, settings=settings, model_dir=Path("."),
                            transform=one_per_note)


@pytest.fixture
def day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model = tmp_path / "ner_model"  # passes the pre-extraction check; the fake NER never loads it
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(nightly, "ner", _fake_ner)
    source = write_folder(tmp_path / "src")
    settings = load_settings(workdir=tmp_path / "w", source_path=source, ner_model_path=model, risk_enabled=False)
    return settings, source


def _one(settings, sql: str, params=()) -> object:
    with open_warehouse(settings.warehouse) as wh:
        return wh.query(sql, list(params)).to_pylist()


def _entities(settings) -> int:
    return _one(settings, "SELECT count(*) AS n FROM ehr.note_entities WHERE ds = ?", [D2])[0]["n"]


def _ner_records(settings) -> list[tuple[str, int]]:
    rows = _one(settings, "SELECT stage, rows_out FROM ehr.pipeline_runs WHERE ds = ? AND stage LIKE 'ner[%' "
                          "ORDER BY stage", [D2])
    return [(r["stage"], r["rows_out"]) for r in rows]


@pytest.mark.slow
def test_faults_rerun_after_a_note_is_quarantined_leaves_no_stale_entities(day) -> None:
    settings, source = day
    nightly.run_day(D2, settings=settings, risk_enabled=False)
    assert _entities(settings) == 2 and _ner_records(settings) == [("ner[part-0]", 2)]
    # the source changes: note 1-DS-1 now carries an SSN, so the PHI gate quarantines it on the rerun
    write_folder(source, {**FILES, "note/discharge.csv.gz": DISCHARGE.replace("denies chest pain.",
                                                                              "denies chest pain. SSN 531-62-4489.")})
    summary = nightly.run_day(D2, settings=settings, risk_enabled=False)
    assert summary["warehouse_rows"]["notes"] == 1
    assert _entities(settings) == 1 and _ner_records(settings) == [("ner[part-0]", 1)]
    left = _one(settings, "SELECT note_id FROM ehr.note_entities WHERE ds = ?", [D2])
    assert left == [{"note_id": "2-DS-1"}]


@pytest.mark.slow
def test_faults_rerun_with_skip_ner_removes_the_days_entities_and_ner_record(day) -> None:
    settings, _ = day
    nightly.run_day(D2, settings=settings, risk_enabled=False)
    assert _entities(settings) == 2
    nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)  # report passes
    assert _entities(settings) == 0 and _ner_records(settings) == []


@pytest.mark.postgres
def test_faults_rerun_with_skip_ner_on_postgres(day) -> None:
    from tests.services import scratch_database

    settings, _ = day
    with scratch_database("ehr_test_skipner") as url:
        settings = settings.model_copy(update={"warehouse_url": url})
        nightly.run_day(D2, settings=settings, risk_enabled=False)
        assert _entities(settings) == 2 and _ner_records(settings) == [("ner[part-0]", 2)]
        nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)
        assert _entities(settings) == 0 and _ner_records(settings) == []


@pytest.mark.slow
def test_faults_three_reruns_leave_identical_counts(day) -> None:
    settings, _ = day
    seen = []
    for _ in range(3):
        nightly.run_day(D2, settings=settings, risk_enabled=False)
        with open_warehouse(settings.warehouse) as wh:
            seen.append(wh.counts_by_day().to_pylist())
    assert seen[0] == seen[1] == seen[2]


@pytest.mark.parametrize("spoil", [
    "DELETE FROM ehr.note_entities WHERE note_id = '1-DS-1'",  # entities gone behind the NER record's back
    "UPDATE ehr.pipeline_runs SET rows_out = 5 WHERE stage = 'ner[part-0]'",  # a record of another run
    "DELETE FROM ehr.pipeline_runs WHERE stage LIKE 'ner[%'",  # entities nobody recorded making
    "DELETE FROM ehr.labs WHERE labevent_id = 2",  # fewer rows than load wrote
], ids=["entities-missing", "ner-count-differs", "no-ner-record", "labs-missing"])
def test_faults_report_fails_when_recorded_counts_and_warehouse_rows_differ(day, spoil) -> None:
    settings, _ = day
    run_id = "run-1"
    nightly.run_day(D2, run_id=run_id, settings=settings, risk_enabled=False)
    with open_warehouse(settings.warehouse) as wh:
        wh.execute_script(spoil)
    with pytest.raises(DataQualityError, match="conservation check failed") as err:
        nightly.report(D2, run_id=run_id, settings=settings)
    assert ("labs" if "labs" in spoil else "note_entities") in str(err.value)


def test_faults_second_run_of_a_day_fails_clearly_when_it_cannot_wait(day) -> None:
    settings, _ = day
    impatient = settings.model_copy(update={"day_lock_wait_seconds": 0})
    with day_lock(settings, D2, run_id="the-first-run"):
        with pytest.raises(DayLockedError, match=r"ds=2026-01-02 is being run by another run .*the-first-run"):
            nightly.run_day(D2, settings=impatient, ner_enabled=False, risk_enabled=False)
        # another day is not held up
        with day_lock(impatient, date(2026, 1, 3)):
            pass
    assert not (settings.lake_dir / "raw").exists()  # the refused run did nothing


@pytest.mark.slow
def test_faults_second_run_of_a_day_waits_with_a_message(day) -> None:
    settings, _ = day
    held = threading.Event()

    def first() -> None:
        with day_lock(settings, D2, run_id="the-first-run"):
            held.set()
            time.sleep(1.5)

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(10)
    messages: list[str] = []
    summary = nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False, on_step=messages.append)
    thread.join()
    assert messages[0].startswith("ds=2026-01-02 is being run by another run") and "waiting up to" in messages[0]
    assert summary["warehouse_rows"]["notes"] == 2


@pytest.mark.postgres
def test_faults_postgres_day_lock_is_an_advisory_lock(tmp_path: Path) -> None:
    from tests.services import scratch_database

    with scratch_database("ehr_test_daylock") as url:
        settings = load_settings(workdir=tmp_path / "w", warehouse_url=url, day_lock_wait_seconds=0)
        with day_lock(settings, D2, run_id="holder"):
            with pytest.raises(DayLockedError, match="ds=2026-01-02 is being run by another run"), \
                    day_lock(settings, D2):
                pass
            with day_lock(settings, date(2026, 1, 3)):
                pass
        with day_lock(settings, D2):  # released with its run
            pass
