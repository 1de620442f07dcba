"""Risk scores do not depend on the order days are run in (issue 13): features are history as of the day,
read from the lake's validated days before it (bulk history from the warehouse), never a later day; a later day
scored before an earlier one arrived is scored again."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.config import load_settings
from pipeline.synth import generate
from pipeline.tasks import history, nightly
from pipeline.warehouse import open_warehouse

START = date(2026, 2, 2)
DAYS = [START + timedelta(days=i) for i in range(3)]
HISTORY_DAYS = 20
COMPARED = ["ds", "hadm_id", "subject_id", "charlson_index", "elixhauser_vw", "lace_score", "readmit_30d_prob",
            "mortality_prob", "risk_band", "top_factors"]  # all but the model's name and the run id


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("order_source") / "source"
    # readmissions within days of each other: a day's features need the days before it
    generate(out, layout="mimic4", patients=250, start=START, days=len(DAYS), history_days=HISTORY_DAYS, seed=11)
    return out


def _settings(workdir: Path, source: Path, model: Path):
    return load_settings(workdir=workdir, source_path=source, risk_model_path=model, ner_enabled=False)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, source: Path, trained) -> Path:
    """A workdir with the history before START ingested (once; each run below works on its own copy of it)."""
    workdir = tmp_path_factory.mktemp("order_seeded")
    history.ingest_history(START - timedelta(days=HISTORY_DAYS), START - timedelta(days=1),
                           settings=_settings(workdir, source, trained[2]))
    return workdir


def _seeded_copy(seeded: Path, workdir: Path, source: Path, model: Path):
    """Settings of a fresh copy of the seeded workdir (lake, warehouse and run records: nothing outside it)."""
    shutil.copytree(seeded, workdir, symlinks=True)  # the lake's partition links are relative: they stay inside
    return _settings(workdir, source, model)


@pytest.fixture(scope="module")
def forward(tmp_path_factory: pytest.TempPathFactory, seeded: Path, source: Path, trained) -> list[dict]:
    """The risk rows of the three days run forward in one backfill: what every other order must give."""
    settings = _seeded_copy(seeded, tmp_path_factory.mktemp("order_forward") / "w", source, trained[2])
    nightly.run_days(DAYS, settings=settings, ner_enabled=False)
    return _risk(settings)


def _risk(settings) -> list[dict]:
    with open_warehouse(settings.warehouse) as wh:
        table: pa.Table = wh.query(f"SELECT {', '.join(COMPARED)} FROM ehr.admission_risk ORDER BY ds, hadm_id")
    return table.to_pylist()


@pytest.mark.slow
def test_faults_forward_backward_and_shuffled_backfills_give_identical_risk(tmp_path, seeded, source, trained,
                                                                            forward) -> None:
    assert len(forward) > 20
    assert {r["ds"] for r in forward} == set(DAYS)
    orders = {"backward": DAYS[::-1], "shuffled": [DAYS[1], DAYS[2], DAYS[0]]}
    assert orders["shuffled"] not in (DAYS, orders["backward"])
    for name, order in orders.items():
        settings = _seeded_copy(seeded, tmp_path / name, source, trained[2])
        nightly.run_days(order, settings=settings, ner_enabled=False)
        assert _risk(settings) == forward, name


@pytest.mark.slow
def test_faults_days_run_one_at_a_time_out_of_order_give_the_forward_scores(tmp_path, seeded, source, trained,
                                                                             forward) -> None:
    """Separate ``run --ds`` runs: a later day run before an earlier one is scored again when the earlier day
    arrives (its history changed), and a later day loaded first does not leak into an earlier day's scores."""
    settings = _seeded_copy(seeded, tmp_path / "w", source, trained[2])
    assert nightly.run_day(DAYS[1], settings=settings, ner_enabled=False)["rescored"] == []
    # the earlier day arrives: the later one, scored without it, is scored again
    assert nightly.run_day(DAYS[0], settings=settings, ner_enabled=False)["rescored"] == [DAYS[1]]
    before = [r for r in _risk(settings) if r["ds"] == DAYS[0]]
    nightly.run_day(DAYS[2], settings=settings, ner_enabled=False)  # a later day loaded, then the first run again
    nightly.run_day(DAYS[0], settings=settings, ner_enabled=False)
    assert [r for r in _risk(settings) if r["ds"] == DAYS[0]] == before
    # and the day-by-day runs agree with the backfill
    assert _risk(settings) == forward
