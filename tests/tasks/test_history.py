"""The history tasks (pipeline/tasks/history.py): the bulk load gets the source settings, and training on
an empty warehouse says what to load first."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline.config import load_settings
from pipeline.tasks import history
from pipeline.tasks.runs import PipelineError
from tests.tasks.conftest import SQL_SOURCE, SourceOpened


def test_history_ingest_passes_the_source_settings_to_the_reader(sql_source):
    settings, seen = sql_source
    with pytest.raises(SourceOpened):
        history.ingest_history(date(2026, 1, 1), date(2026, 1, 2), settings=settings)
    assert seen == SQL_SOURCE


@pytest.mark.parametrize("task", [history.train_risk_model, history.evaluate_risk_model])
def test_history_risk_model_on_an_empty_warehouse_says_to_load_history(tmp_path, task):
    settings = load_settings(workdir=tmp_path)
    with pytest.raises(PipelineError, match=r"no admissions: load history first \(ehr-pipeline backfill --bulk\)"):
        task(settings, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_history_tables_follow_the_contract_whatever_the_live_column_order(tmp_path):
    """A warehouse whose tables were migrated (a column moved to the end, a nullable column added) still
    gives the trainer its tables in the contract's layout."""
    from pipeline.contracts import arrow_schema
    from pipeline.warehouse import open_warehouse
    from tests.warehouse.conftest import DAY1, LOADED_TABLES, make_day, sort_rows

    settings = load_settings(workdir=tmp_path)
    with open_warehouse(settings.warehouse) as wh:
        wh.replace_days({t: make_day(t, DAY1) for t in LOADED_TABLES}, DAY1)
        for table, column in (("admissions", "insurance"), ("patients", "gender"), ("labs", "valuenum")):
            kind = {"valuenum": "DOUBLE"}.get(column, "VARCHAR")
            wh.execute_script(f"ALTER TABLE ehr.{table} RENAME COLUMN {column} TO {column}_old; "
                              f"ALTER TABLE ehr.{table} ADD COLUMN {column} {kind}; "
                              f"UPDATE ehr.{table} SET {column} = {column}_old; "
                              f"ALTER TABLE ehr.{table} DROP COLUMN {column}_old; "
                              f"ALTER TABLE ehr.{table} ADD COLUMN reviewed_by VARCHAR")
    tables = history._history_tables(settings)
    for name in ("admissions", "patients", "labs", "diagnoses", "prescriptions", "note_entities"):
        assert tables[name].schema.equals(arrow_schema(name)), name
        loaded = make_day(name, DAY1).cast(arrow_schema(name))
        assert sort_rows(tables[name]).to_pylist() == sort_rows(loaded).to_pylist(), name
