"""The validation stage's config: its thresholds are the pipeline settings' (one definition), its extras its own."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.config import Settings, ValidationSettings, load_settings
from pipeline.validate import ValidationConfig

# a value other than the default for every threshold, as an operator would set it
NON_DEFAULTS = {
    "max_quarantine_share": ("0.05", 0.05),
    "min_rows_for_share_check": ("7", 7),
    "volume_factor": ("3.5", 3.5),
    "volume_min_days": ("9", 9),
    "on_batch_failure": ("warn", "warn"),
    "note_max_chars": ("1234", 1234),
    "phi_gate": ("false", False),
    "phi_threshold": ("0.3", 0.3),
    "empty_day": ("fail", "fail"),
}


def test_config_every_threshold_is_a_setting():
    assert set(NON_DEFAULTS) == set(ValidationSettings.model_fields)
    assert set(ValidationSettings.model_fields) <= set(Settings.model_fields)
    assert set(ValidationSettings.model_fields) <= set(ValidationConfig.model_fields)


def test_config_takes_every_threshold_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    for name, (text, _value) in NON_DEFAULTS.items():
        monkeypatch.setenv(f"EHR_{name.upper()}", text)
    config = ValidationConfig.from_settings(load_settings())
    assert {name: getattr(config, name) for name in NON_DEFAULTS} == {n: v for n, (_t, v) in NON_DEFAULTS.items()}
    assert config.note_window_days == ValidationConfig().note_window_days  # the stage's own fields keep theirs


def test_config_defaults_are_the_settings_defaults():
    fields = set(ValidationSettings.model_fields)
    assert ValidationConfig().model_dump(include=fields) == load_settings().model_dump(include=fields)


def test_config_rejects_unknown_and_out_of_range_values():
    with pytest.raises(ValidationError, match="min_rows_for_share"):
        ValidationConfig(min_rows_for_share=3)  # the old name of min_rows_for_share_check
    with pytest.raises(ValidationError, match="max_quarantine_share"):
        ValidationConfig(max_quarantine_share=1.5)
    with pytest.raises(ValidationError, match="phi_threshold"):
        ValidationConfig(phi_threshold=1.0)
