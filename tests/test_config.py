from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_settings


def test_config_defaults_follow_the_workdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EHR_WORKDIR", str(tmp_path / "w"))
    s = load_settings()
    assert s.source_dir == tmp_path / "w" / "source"
    assert s.warehouse == f"duckdb:///{tmp_path / 'w' / 'warehouse.duckdb'}"
    assert s.ner_model_dir == tmp_path / "w" / "models" / "ner"
    assert s.device == "auto"


def test_config_yaml_then_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("source_layout: mimic3\npart_rows: 100\n")
    monkeypatch.setenv("EHR_CONFIG", str(cfg))
    assert load_settings().source_layout == "mimic3"
    monkeypatch.setenv("EHR_PART_ROWS", "7")
    assert load_settings().part_rows == 7


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("EHR_DEVICE", "tpu", "EHR_DEVICE"),
        ("EHR_SOURCE_LAYOUT", "mimic5", "EHR_SOURCE_LAYOUT"),
        ("EHR_WAREHOUSE_URL", "mysql://x", "EHR_WAREHOUSE_URL"),
        ("EHR_PART_ROWS", "0", "EHR_PART_ROWS"),
    ],
)
def test_config_wrong_setting_is_named(monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_config_sql_layout_needs_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_SOURCE_LAYOUT", "sql")
    with pytest.raises(ConfigError, match="EHR_SOURCE_URL"):
        load_settings()
