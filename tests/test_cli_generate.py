"""``ehr-pipeline generate`` passes its options to the generator (--messy plants defects)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pipeline import cli


def test_cli_generate_passes_messy_and_layout(tmp_path: Path, monkeypatch) -> None:
    seen = {}

    def fake_generate(out, **kwargs):
        seen.update(kwargs, out=out)

    monkeypatch.setattr("pipeline.synth.generate", fake_generate)
    args = ["generate", "--out", str(tmp_path / "src"), "--layout", "mimic3", "--patients", "20", "--days", "2",
            "--messy"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert seen["messy"] is True and seen["layout"] == "mimic3" and seen["patients"] == 20 and seen["days"] == 2
    result = CliRunner().invoke(cli.app, args[:-1])
    assert result.exit_code == 0 and seen["messy"] is False


def test_cli_generate_refuses_unknown_layout(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.app, ["generate", "--out", str(tmp_path), "--layout", "mimic5"])
    assert result.exit_code != 0 and "mimic4 or mimic3" in result.output
