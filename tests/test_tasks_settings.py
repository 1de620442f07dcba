"""Settings reach the stages: the task layer passes every relevant setting on, not only the defaults."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline import tasks
from pipeline.config import load_settings


class _Stop(Exception):
    pass


def test_tasks_settings_source_schemas_reach_the_reader(monkeypatch, tmp_path):
    seen = {}

    def fake_open_source(layout, path=None, url=None, schemas=None):
        seen.update(layout=layout, url=url, schemas=schemas)
        raise _Stop

    monkeypatch.setattr("pipeline.sources.open_source", fake_open_source)
    settings = load_settings(workdir=tmp_path, source_layout="sql", source_url="sqlite:///x.db",
                             source_schemas="mimiciv_hosp,notes=mimiciv_note")
    with pytest.raises(_Stop):
        tasks.extract(date(2026, 1, 1), run_id="t", settings=settings)
    assert seen == {"layout": "sql", "url": "sqlite:///x.db", "schemas": "mimiciv_hosp,notes=mimiciv_note"}
    seen.clear()
    with pytest.raises(_Stop):
        tasks.ingest_history(date(2026, 1, 1), date(2026, 1, 2), settings=settings)
    assert seen["schemas"] == "mimiciv_hosp,notes=mimiciv_note"


def test_tasks_settings_validation_config_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EHR_EMPTY_DAY", "fail")
    monkeypatch.setenv("EHR_PHI_GATE", "false")
    from pipeline.validate import ValidationConfig

    config = ValidationConfig.from_settings(load_settings(workdir=tmp_path))
    assert config.empty_day == "fail" and config.phi_gate is False
    monkeypatch.setenv("EHR_EMPTY_DAY", "maybe")
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="EHR_EMPTY_DAY"):
        load_settings(workdir=tmp_path)


def test_tasks_settings_ner_precision(monkeypatch, tmp_path):
    monkeypatch.setenv("EHR_NER_PRECISION", "bf16")
    assert load_settings(workdir=tmp_path).ner_precision == "bf16"
    monkeypatch.setenv("EHR_NER_PRECISION", "int4")
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="EHR_NER_PRECISION"):
        load_settings(workdir=tmp_path)
