"""``ehr-pipeline demo`` takes its source layout from --layout, else from the settings (EHR_SOURCE_LAYOUT)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import airflow_local, cli


class _Stop(Exception):
    """Raised by the stand-in for data generation: the layout is all this test needs."""


@pytest.fixture
def chosen(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    seen: dict[str, str] = {}

    def fake_ensure_source(settings, *, layout, **kwargs):
        seen["layout"] = layout
        seen["settings_layout"] = settings.source_layout
        raise _Stop

    monkeypatch.setattr(airflow_local, "ensure_source", fake_ensure_source)
    return seen


def _demo(tmp_path: Path, *args: str):
    return CliRunner().invoke(cli.app, ["demo", "--workdir", str(tmp_path / "w"), *args])


def test_cli_demo_layout_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chosen) -> None:
    monkeypatch.setenv("EHR_SOURCE_LAYOUT", "mimic3")
    result = _demo(tmp_path)
    assert isinstance(result.exception, _Stop)
    assert chosen == {"layout": "mimic3", "settings_layout": "mimic3"}


def test_cli_demo_layout_option_beats_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chosen) -> None:
    monkeypatch.setenv("EHR_SOURCE_LAYOUT", "mimic3")
    result = _demo(tmp_path, "--layout", "mimic4")
    assert isinstance(result.exception, _Stop)
    assert chosen == {"layout": "mimic4", "settings_layout": "mimic4"}


def test_cli_demo_layout_default_is_mimic4(tmp_path: Path, chosen) -> None:
    assert isinstance(_demo(tmp_path).exception, _Stop)
    assert chosen["layout"] == "mimic4"


def test_cli_demo_refuses_a_sql_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chosen) -> None:
    monkeypatch.setenv("EHR_SOURCE_LAYOUT", "sql")
    monkeypatch.setenv("EHR_SOURCE_URL", "sqlite:///x.db")
    result = _demo(tmp_path)
    assert result.exit_code == 2 and "mimic4 or mimic3" in result.output
    assert chosen == {}
