from __future__ import annotations

import re
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
        ("EHR_EMPTY_DAY", "maybe", "EHR_EMPTY_DAY"),
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


def test_config_yaml_unknown_key_is_named_with_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("source_layot: mimic3\npart_rows: 100\n")
    monkeypatch.setenv("EHR_CONFIG", str(cfg))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert str(cfg) in message and "'source_layot'" in message and "did you mean 'source_layout'" in message


def test_config_yaml_keys_are_case_insensitive(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("Source_Layout: mimic3\n")
    monkeypatch.setenv("EHR_CONFIG", str(cfg))
    assert load_settings().source_layout == "mimic3"


@pytest.mark.parametrize("text", ["source_layout: [mimic3\n", "part_rows: 1\n  bad indent: x\n", "a: b: c\n"])
def test_config_malformed_yaml_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(text)
    monkeypatch.setenv("EHR_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=rf"{re.escape(str(cfg))}: not valid YAML \(line \d+"):
        load_settings()


def test_config_yaml_must_be_a_mapping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("- source_layout\n")
    monkeypatch.setenv("EHR_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings()



def test_config_source_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_SOURCE_SCHEMAS", "mimiciv_hosp, notes=mimiciv_note")
    assert load_settings().source_schemas == "mimiciv_hosp, notes=mimiciv_note"
    monkeypatch.setenv("EHR_SOURCE_SCHEMAS", "charts=icu")
    with pytest.raises(ConfigError, match="EHR_SOURCE_SCHEMAS"):
        load_settings()


def test_config_ner_precision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EHR_NER_PRECISION", "bf16")
    assert load_settings(workdir=tmp_path).ner_precision == "bf16"
    monkeypatch.setenv("EHR_NER_PRECISION", "int4")
    with pytest.raises(ConfigError, match="EHR_NER_PRECISION"):
        load_settings(workdir=tmp_path)
