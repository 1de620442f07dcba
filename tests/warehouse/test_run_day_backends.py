"""``run --ds D`` loads the same counts into PostgreSQL as into DuckDB, and a rerun leaves them unchanged.

One generated dataset; a few days of history bulk-loaded (a multi-day range: several day partitions
in PostgreSQL), then one nightly day through every stage (NER with the tiny random-weight model of
tests/nlp; risk off: it needs a model trained on a long history), into each warehouse.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.synth import generate
from pipeline.tasks import history, nightly
from pipeline.warehouse.base import Warehouse, open_warehouse
from tests.nlp.conftest import build_tiny_model

from .conftest import scratch_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DAY = date(2026, 1, 6)
HISTORY_DAYS = 4


def _counts(warehouse: Warehouse) -> dict[tuple[str, date], int]:
    return {(r["table_name"], r["ds"]): r["row_count"] for r in warehouse.counts_by_day().to_pylist()}


def test_run_day_counts_match_between_duckdb_and_postgres_and_rerun_is_idempotent(
    pg_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    generate(source, layout="mimic4", patients=60, start=DAY, days=1, history_days=HISTORY_DAYS, seed=5,
             messy=True)  # mangled, undatable and oversized rows must flow through both backends alike
    model = build_tiny_model(tmp_path / "ner")
    counts: dict[str, dict[tuple[str, date], int]] = {}
    with scratch_database("ehr_test_run_day") as url:
        for name, warehouse_url in (
            ("duckdb", f"duckdb:///{tmp_path / 'duck' / 'warehouse.duckdb'}"),
            ("postgres", url),
        ):
            settings = load_settings(
                workdir=tmp_path / name, source_path=source, warehouse_url=warehouse_url, ner_model_path=model
            )
            history.ingest_history(
                DAY - timedelta(days=HISTORY_DAYS), DAY - timedelta(days=1), settings=settings
            )
            summary = nightly.run_day(DAY, settings=settings, risk_enabled=False)
            assert summary["warehouse_rows"]["admissions"] > 0
            with open_warehouse(warehouse_url) as warehouse:
                counts[name] = _counts(warehouse)
        duck, pg = counts["duckdb"], counts["postgres"]
        assert pg == duck, {
            k: (duck.get(k), pg.get(k)) for k in set(duck) | set(pg) if duck.get(k) != pg.get(k)
        }
        tables = {table for table, _ in pg}
        assert {"patients", "admissions", "labs", "notes", "note_entities", "validation_results"} <= tables
        assert {ds for _, ds in pg} >= {DAY - timedelta(days=n) for n in range(HISTORY_DAYS + 1)}
        assert pg[("note_entities", DAY)] > 0 and pg[("labs", DAY)] > 0
        assert sum(n for (table, _), n in pg.items() if table == "quarantine") > 0  # the planted defects

        # the same day again into PostgreSQL: replaced, not appended
        settings = load_settings(
            workdir=tmp_path / "postgres", source_path=source, warehouse_url=url, ner_model_path=model
        )
        nightly.run_day(DAY, settings=settings, risk_enabled=False)
        with open_warehouse(url) as warehouse:
            assert _counts(warehouse) == pg
            partitions = (
                warehouse.query(
                    "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'ehr.labs'::regclass"
                )
                .column("n")[0]
                .as_py()
            )
        assert partitions == len({ds for table, ds in pg if table == "labs"})
