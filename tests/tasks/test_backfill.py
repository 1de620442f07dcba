"""The chunked history backfill (pipeline/tasks/backfill.py): chunk planning, what a rerun does, failures that do
not stop the other chunks, NER and risk on history, and reprocessing after a new NER model."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.tasks import backfill
from pipeline.tasks.backfill import BackfillError, Chunk, StageRecord, plan_chunks, plan_work
from pipeline.warehouse import open_warehouse

START, END = date(2025, 11, 1), date(2025, 12, 31)
VERSIONS = {"code": "c1", "contracts": "t1", "rules": "r1", "nlp_rules": "n1", "risk_rules": "k1",
            "ner_model": "m1", "risk_model": "s1"}


# --- planning --------------------------------------------------------------------------------------
def test_plan_chunks_months_weeks_and_days_clip_to_the_range() -> None:
    months = plan_chunks(date(2024, 1, 15), date(2024, 3, 1))
    assert [(c.start, c.end) for c in months] == [
        (date(2024, 1, 15), date(2024, 1, 31)), (date(2024, 2, 1), date(2024, 2, 29)),
        (date(2024, 3, 1), date(2024, 3, 1))]
    weeks = plan_chunks(date(2026, 1, 7), date(2026, 1, 20), "week")  # 2026-01-07 is a Wednesday
    assert [str(c) for c in weeks] == ["2026-01-07..2026-01-11", "2026-01-12..2026-01-18", "2026-01-19..2026-01-20"]
    days = plan_chunks(date(2026, 1, 1), date(2026, 1, 10), "4 days")
    assert [len(c.days) for c in days] == [4, 4, 2]
    one = plan_chunks(date(2026, 1, 1), date(2026, 1, 1), "month")
    assert one == [Chunk(date(2026, 1, 1), date(2026, 1, 1))]
    # the chunks cover the range exactly once
    assert sum(len(c.days) for c in plan_chunks(date(2024, 1, 1), date(2025, 12, 31))) == 731


@pytest.mark.parametrize("spec", ["fortnight", "0", "-3", "2 weeks", ""])
def test_plan_chunks_refuses_a_bad_chunk_size(spec: str) -> None:
    with pytest.raises(BackfillError, match="chunk size"):
        plan_chunks(date(2026, 1, 1), date(2026, 1, 31), spec)


def test_plan_chunks_refuses_a_range_that_ends_before_it_starts() -> None:
    with pytest.raises(BackfillError, match="before it starts"):
        plan_chunks(date(2026, 2, 1), date(2026, 1, 1))


def _done(chunk: Chunk, **overrides: StageRecord) -> dict[str, StageRecord]:
    """Every stage of ``chunk`` done with VERSIONS, each reading the previous run ids."""
    recs = {}
    for stage in backfill.STAGES:
        recs[stage] = overrides.get(stage) or StageRecord(
            "success", f"run-{stage}", chunk.end, {k: VERSIONS[k] for k in backfill.VERSION_KEYS[stage]},
            {s: f"run-{s}" for s in backfill.INPUTS[stage]})
    return recs


def test_plan_work_runs_what_is_missing_and_everything_after_it() -> None:
    a, b, c = plan_chunks(date(2026, 1, 1), date(2026, 3, 31))
    partial = _done(b)
    del partial["ner"], partial["risk"], partial["load"]
    records = {a.start: _done(a), b.start: partial}
    work = {w.chunk: w for w in plan_work([a, b, c], records, VERSIONS)}
    assert work[a].stages == ()
    assert work[b].stages == ("ner", "risk", "load")
    assert work[c].stages == backfill.STAGES
    assert work[c].reasons["extract"] == "never ran"


def test_plan_work_failed_mode_redoes_only_failed_chunks_from_the_failed_stage() -> None:
    a, b = plan_chunks(date(2026, 1, 1), date(2026, 2, 28))
    failed = StageRecord("failed", "run-x", a.end, {}, {})
    records = {a.start: _done(a, validate=failed)}
    work = plan_work([a, b], records, VERSIONS, "failed")
    assert [w.stages for w in work] == [("validate", "ner", "risk", "load"), ()]
    # the default (missing) also picks up the never-run chunk
    assert [w.stages for w in plan_work([a, b], records, VERSIONS)] == [
        ("validate", "ner", "risk", "load"), backfill.STAGES]


def test_plan_work_stale_after_a_new_ner_model_redoes_ner_and_what_depends_on_it() -> None:
    a = plan_chunks(date(2026, 1, 1), date(2026, 1, 31))[0]
    records = {a.start: _done(a)}
    assert plan_work([a], records, VERSIONS, "missing")[0].stages == ()
    assert plan_work([a], records, VERSIONS, "stale")[0].stages == ()
    new_model = {**VERSIONS, "ner_model": "m2"}
    work = plan_work([a], records, new_model, "stale")[0]
    assert work.stages == ("ner", "risk", "load")
    assert "ner_model" in work.reasons["ner"]
    assert plan_work([a], records, new_model, "missing")[0].stages == ()  # missing never looks at versions
    assert plan_work([a], records, {**VERSIONS, "rules": "r2"}, "stale")[0].stages == (
        "validate", "ner", "risk", "load")
    assert plan_work([a], records, VERSIONS, "all")[0].stages == backfill.STAGES


def test_plan_work_a_stage_whose_input_was_redone_runs_again() -> None:
    a = plan_chunks(date(2026, 1, 1), date(2026, 1, 31))[0]
    # validate was redone (new run id) after ner read the old one, then the run was killed
    recs = _done(a, validate=StageRecord("success", "run-validate-2", a.end, {}, {"extract": "run-extract"}))
    assert plan_work([a], {a.start: recs}, VERSIONS)[0].stages == ("ner", "risk", "load")


def test_plan_work_skipped_stages_stay_skipped_only_while_asked() -> None:
    a = plan_chunks(date(2026, 1, 1), date(2026, 1, 31))[0]
    recs = _done(a, ner=StageRecord("skipped", "run-ner", a.end, {}, {"validate": "run-validate"}))
    assert plan_work([a], {a.start: recs}, VERSIONS, skip=("ner",))[0].stages == ()
    assert plan_work([a], {a.start: recs}, VERSIONS)[0].stages == ("ner", "risk", "load")


def test_plan_work_a_record_of_another_chunk_size_does_not_count() -> None:
    month = plan_chunks(date(2026, 1, 1), date(2026, 1, 31))[0]
    week = plan_chunks(date(2026, 1, 1), date(2026, 1, 31), "week")[0]
    assert plan_work([week], {month.start: _done(month)}, VERSIONS)[0].stages == backfill.STAGES


def test_plan_work_refuses_an_unknown_mode() -> None:
    with pytest.raises(BackfillError, match="--reprocess"):
        plan_work([], {}, VERSIONS, "everything")


# --- running over a generated source ---------------------------------------------------------------
@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.synth import generate

    out = tmp_path_factory.mktemp("backfill_source")
    generate(out, patients=200, start=date(2026, 1, 1), days=1, history_days=61, seed=11, messy=True)
    return out


def _counts(settings) -> dict[str, int]:
    tables = ("patients", "admissions", "diagnoses", "labs", "prescriptions", "notes", "quarantine",
              "note_entities", "admission_risk")
    with open_warehouse(settings.warehouse) as wh:
        return {t: wh.query(f"SELECT count(*) AS n FROM ehr.{t}").column("n")[0].as_py() for t in tables}


@pytest.mark.slow
def test_structured_backfill_loads_every_day_resumes_nothing_and_records_versions(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(workdir=tmp_path, source_path=source)
    end = date(2025, 11, 10)
    work, outcome = backfill.run_backfill(START, end, settings=settings, chunk="5 days", skip_ner=True,
                                          skip_risk=True)
    assert [c.status for c in outcome.chunks] == ["success", "success"]
    counts = _counts(settings)
    assert counts["admissions"] > 0 and counts["labs"] > 0 and counts["note_entities"] == 0
    # nothing lost: per day, the validate run's rows add up and match the warehouse (the nightly report's check)
    with open_warehouse(settings.warehouse) as wh:
        bad = wh.query(
            "SELECT r.ds, r.table_name FROM ehr.pipeline_runs r JOIN ehr.pipeline_runs e "
            "ON e.ds = r.ds AND e.table_name = r.table_name AND e.stage = 'extract' "
            "WHERE r.stage = 'validate' AND (r.rows_in <> r.rows_out + r.rows_quarantined OR e.rows_in <> r.rows_in)"
        ).num_rows
        days = wh.query("SELECT count(DISTINCT ds) AS n FROM ehr.pipeline_runs WHERE stage = 'load'").column("n")[0]
        records = backfill.chunk_records(settings, START, end)
    assert bad == 0 and days.as_py() == 10
    first = records[START]
    assert first["ner"].status == "skipped" and first["ner"].detail["skipped"] == "--skip-ner"
    assert first["load"].status == "success" and first["extract"].versions["code"].startswith("0.")
    # the same command again has nothing to do
    work, outcome = backfill.run_backfill(START, end, settings=settings, chunk="5 days", skip_ner=True,
                                          skip_risk=True)
    assert [w.stages for w in work] == [(), ()] and not outcome.chunks[0].stages and _counts(settings) == counts
    # reprocessing reads the staged copy, not the source again
    def no_source(*args, **kwargs):
        raise AssertionError("the source was read again")

    monkeypatch.setattr("pipeline.sources.open_source", no_source)
    work, outcome = backfill.run_backfill(START, date(2025, 11, 5), settings=settings, chunk="5 days",
                                          skip_ner=True, skip_risk=True, reprocess="all")
    assert work[0].stages == backfill.STAGES and not outcome.failed
    assert _counts(settings) == counts


@pytest.mark.slow
def test_the_dag_groups_in_dag_order_give_the_same_warehouse_as_the_cli_path(source: Path, tmp_path: Path) -> None:
    """What the ehr_history DAG does, without the scheduler: every chunk extracted, then every chunk validated
    (before any is loaded: validation learns earlier chunks' admissions from the lake), then NER, then risk
    and load; equal to the chunk-by-chunk run."""
    cli = load_settings(workdir=tmp_path / "cli", source_path=source)
    backfill.run_backfill(START, END, settings=cli, chunk="20 days", skip_ner=True, skip_risk=True)
    dag = load_settings(workdir=tmp_path / "dag", source_path=source)
    items = backfill.plan_for_dag(START, END, chunk="20 days", skip_ner=True, skip_risk=True, settings=dag)
    assert len(items) == 4 and items[0]["stages"] == list(backfill.STAGES)
    for group in backfill.DAG_GROUPS:
        items = [backfill.run_dag_group(item, group, settings=dag) for item in items]
    assert not any(item.get("failed") for item in items)
    assert _counts(dag) == _counts(cli)
    assert backfill.failed_chunks(START, END, settings=dag) == []
    assert backfill.plan_for_dag(START, END, chunk="20 days", skip_ner=True, skip_risk=True, settings=dag) == []


@pytest.mark.slow
def test_a_failed_chunk_is_recorded_the_others_go_on_and_failed_redoes_it(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(workdir=tmp_path, source_path=source)
    real = backfill.validate_chunk

    def broken(chunk: Chunk, **kwargs):
        if chunk.start == START:
            raise RuntimeError("disk full")
        return real(chunk, **kwargs)

    monkeypatch.setattr(backfill, "validate_chunk", broken)
    end = date(2025, 11, 6)
    _, outcome = backfill.run_backfill(START, end, settings=settings, chunk="3 days", skip_ner=True, skip_risk=True)
    assert [(str(c.chunk), c.status) for c in outcome.chunks] == [
        ("2025-11-01..2025-11-03", "failed"), ("2025-11-04..2025-11-06", "success")]
    assert "validate: RuntimeError: disk full" in outcome.failed[0].error
    assert backfill.chunk_records(settings, START, START)[START]["validate"].status == "failed"
    assert backfill.failed_chunks(START, end, settings=settings) == [
        "2025-11-01 validate: RuntimeError: disk full"]
    monkeypatch.setattr(backfill, "validate_chunk", real)
    work, outcome = backfill.run_backfill(START, end, settings=settings, chunk="3 days", skip_ner=True,
                                          skip_risk=True, reprocess="failed")
    assert [w.stages for w in work] == [("validate", "ner", "risk", "load"), ()]
    assert not outcome.failed


def test_missing_models_stop_before_any_chunk(source: Path, tmp_path: Path) -> None:
    settings = load_settings(workdir=tmp_path, source_path=source)
    with pytest.raises(BackfillError, match="no NER model"):
        backfill.run_backfill(START, START, settings=settings)
    with pytest.raises(BackfillError, match="no risk model"):
        backfill.run_backfill(START, START, settings=settings, skip_ner=True)


@pytest.mark.slow
def test_history_with_ner_and_risk_then_a_new_ner_model_redoes_only_what_depends_on_it(
    source: Path, tmp_path: Path, tiny_model_dir: Path, trained: tuple
) -> None:
    model = tmp_path / "ner"
    shutil.copytree(tiny_model_dir, model)
    settings = load_settings(workdir=tmp_path, source_path=source, ner_model_path=model,
                             risk_model_path=trained[2], device="cpu")
    month = (date(2025, 12, 1), date(2025, 12, 31))
    _, outcome = backfill.run_backfill(*month, settings=settings)
    assert not outcome.failed
    counts = _counts(settings)
    assert counts["note_entities"] > 0 and counts["admission_risk"] == counts["admissions"]
    before = backfill.chunk_records(settings, *month)[month[0]]
    # a new NER model ("train-ner" again): stale work is NER, risk and load, not extract or validate
    (model / "config.json").write_text((model / "config.json").read_text() + "\n")
    work, outcome = backfill.run_backfill(*month, settings=settings, reprocess="stale")
    assert work[0].stages == ("ner", "risk", "load") and not outcome.failed
    after = backfill.chunk_records(settings, *month)[month[0]]
    assert after["extract"].run_id == before["extract"].run_id
    assert after["validate"].run_id == before["validate"].run_id
    assert after["ner"].run_id != before["ner"].run_id
    assert after["ner"].versions["ner_model"] != before["ner"].versions["ner_model"]
    assert _counts(settings) == counts


@pytest.mark.slow
def test_a_backfill_killed_mid_way_resumes_to_the_same_counts(source: Path, tmp_path: Path) -> None:
    """``kill -9`` of the CLI while a later chunk is being validated, then the same command: same warehouse counts
    as an uninterrupted run, and nothing half-written is read on the way."""
    import os
    import signal
    import subprocess
    import sys
    import time

    end = date(2025, 11, 21)
    whole = load_settings(workdir=tmp_path / "whole", source_path=source)
    backfill.run_backfill(START, end, settings=whole, chunk="week", skip_ner=True, skip_risk=True)
    killed = tmp_path / "killed"
    env = {**os.environ, "EHR_SOURCE_PATH": str(source), "EHR_WORKDIR": str(killed)}
    cmd = [sys.executable, "-m", "pipeline.cli", "backfill", "--start", START.isoformat(), "--end", end.isoformat(),
           "--chunk", "week", "--bulk"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the third chunk (2025-11-10..16) is being extracted or validated: chunks 1 and 2 are done
    signal_file = killed / "lake" / "raw" / "labs" / "ds=2025-11-12"
    deadline = time.monotonic() + 600
    while not os.path.lexists(signal_file) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the backfill ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = load_settings(workdir=killed, source_path=source)
    work, outcome = backfill.run_backfill(START, end, settings=resumed, chunk="week", skip_ner=True, skip_risk=True)
    assert work[0].stages == () and work[-1].stages == backfill.STAGES  # done chunks are not redone
    assert not outcome.failed
    assert _counts(resumed) == _counts(whole)


def test_plan_work_revalidating_a_loaded_chunk_extracts_again_when_raw_free_text_is_not_kept() -> None:
    a = plan_chunks(date(2026, 1, 1), date(2026, 1, 31))[0]
    records = {a.start: _done(a)}
    new_rules = {**VERSIONS, "rules": "r2"}
    kept = plan_work([a], records, new_rules, "stale")[0]
    assert kept.stages == ("validate", "ner", "risk", "load")
    dropped = plan_work([a], records, new_rules, "stale", raw_kept=False)[0]
    assert dropped.stages == ("extract", "validate", "ner", "risk", "load")
    assert "EHR_RAW_RETENTION" in dropped.reasons["extract"]
    # a new NER model needs no raw data: nothing is extracted again
    assert plan_work([a], records, {**VERSIONS, "ner_model": "m2"}, "stale", raw_kept=False)[0].stages == (
        "ner", "risk", "load")


def test_months_the_source_has_no_rows_for_are_not_planned(source: Path, tmp_path: Path) -> None:
    settings = load_settings(workdir=tmp_path, source_path=source)
    far = date(2024, 1, 1)  # nearly two years before the source's rows (MIMIC's shifted dates leave such gaps)
    assert backfill.run_backfill(far, END, settings=settings, skip_ner=True, skip_risk=True, dry_run=True)[0]
    backfill.stage_source(settings)
    work, _ = backfill.run_backfill(far, END, settings=settings, skip_ner=True, skip_risk=True, dry_run=True)
    planned = [w.chunk.start for w in work]
    assert planned and len(planned) < len(backfill.plan_chunks(far, END, "month"))
    assert min(planned) >= date(2025, 1, 1)
    assert date(2025, 12, 1) in planned  # the months with rows are all there
