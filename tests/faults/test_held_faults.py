"""The cases that held when issue 13 was filed, kept holding: each asserts the outcome a user needs.

(Source-file cases that held — CRLF, BOM, extra or reordered columns, truncated or fake gzip, empty files,
invalid UTF-8, 2 MB notes — are in test_source_faults.py; three reruns of a day in test_rerun_faults.py.)
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import ConfigError, load_settings
from pipeline.tasks import nightly
from pipeline.tasks.runs import is_deterministic
from pipeline.warehouse import open_warehouse
from pipeline.warehouse.base import WarehouseError
from tests.sources.conftest import DISCHARGE, FILES, write_folder

D2 = date(2026, 1, 2)


@pytest.mark.parametrize("value", ["2026-02-30", "yesterday", "2026-1-2x", ""])
def test_faults_bad_ds_value_is_refused_before_anything_runs(tmp_path: Path, value: str) -> None:
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["run", "--ds", value, "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "is not a date (YYYY-MM-DD)" in result.output
    assert not (tmp_path / "w" / "lake").exists()


@pytest.mark.parametrize("url", ["mysql://u:secret-pw@db/x", "sqlite:///x.db", "http://warehouse"])
def test_faults_wrong_warehouse_url_scheme_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"EHR_WAREHOUSE_URL: .*must start with duckdb:/// or postgresql://") as err:
        load_settings(warehouse_url=url)
    assert "secret-pw" not in str(err.value)
    assert is_deterministic(err.value)
    with pytest.raises(WarehouseError, match="unsupported warehouse URL scheme"):
        open_warehouse(url)


def test_faults_read_only_workdir_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    source = write_folder(tmp_path / "src")
    if os.geteuid() == 0:  # root writes through permission bits: a file where the workdir should be
        workdir = tmp_path / "not-a-folder"
        workdir.write_text("")
    else:
        workdir = tmp_path / "read-only"
        workdir.mkdir()
        workdir.chmod(0o500)
    settings = load_settings(workdir=workdir, source_path=source, ner_enabled=False, risk_enabled=False)
    try:
        with pytest.raises((WarehouseError, OSError)) as err:
            nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)
        assert str(workdir) in str(err.value)
    finally:
        if workdir.is_dir():
            workdir.chmod(0o700)


def test_faults_corrupted_risk_model_is_refused_and_not_retried(tmp_path: Path, trained) -> None:
    from pipeline.risk import RiskModel, RiskModelIntegrityError
    from pipeline.risk.model import WEIGHTS_FILE

    model = tmp_path / "risk"
    shutil.copytree(trained[2], model)
    data = bytearray((model / WEIGHTS_FILE).read_bytes())
    data[-10] ^= 0xFF
    (model / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(RiskModelIntegrityError) as err:
        RiskModel.load(model, "cpu")
    assert is_deterministic(err.value)


_KILLED_RUN = textwrap.dedent("""
    import sys
    from datetime import date
    from pipeline.config import load_settings
    from pipeline.tasks import nightly
    settings = load_settings(workdir=sys.argv[1], source_path=sys.argv[2], ner_enabled=False, risk_enabled=False)
    print("started", flush=True)
    while True:  # extract and load over and over until killed
        nightly.extract(date(2026, 1, 2), run_id="doomed", settings=settings)
        nightly.validate(date(2026, 1, 2), run_id="doomed", settings=settings)
        nightly.load(date(2026, 1, 2), run_id="doomed", settings=settings)
""")


@pytest.mark.slow
@pytest.mark.parametrize("after", [0.5, 2.0, 4.0])
def test_faults_kill_9_during_extract_or_load_then_rerun_gives_the_clean_result(tmp_path: Path, after: float) -> None:
    source = write_folder(tmp_path / "src")
    clean = load_settings(workdir=tmp_path / "clean", source_path=source, ner_enabled=False, risk_enabled=False)
    expected = nightly.run_day(D2, settings=clean, ner_enabled=False, risk_enabled=False)["warehouse_rows"]

    workdir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(workdir), str(source)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout.readline().strip() == b"started"
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    settings = load_settings(workdir=workdir, source_path=source, ner_enabled=False, risk_enabled=False)
    assert nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)["warehouse_rows"] == expected


@pytest.mark.postgres
def test_faults_nul_byte_gives_the_same_outcome_on_duckdb_and_postgres(tmp_path: Path) -> None:
    from tests.services import scratch_database

    source = write_folder(tmp_path / "src", {**FILES, "note/discharge.csv.gz": DISCHARGE.replace(
        "Patient denies", "Patient\x00 denies")})
    outcomes = {}
    with scratch_database("ehr_test_nul") as url:
        for name, warehouse in (("duckdb", None), ("postgres", url)):
            settings = load_settings(workdir=tmp_path / name, source_path=source, warehouse_url=warehouse,
                                     ner_enabled=False, risk_enabled=False)
            summary = nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)
            with open_warehouse(settings.warehouse) as wh:
                q = wh.query("SELECT source_table, record_key, rule FROM ehr.quarantine ORDER BY record_key")
            outcomes[name] = (summary["warehouse_rows"], q.to_pylist())
    assert outcomes["duckdb"] == outcomes["postgres"]
    assert {"source_table": "notes", "record_key": "1-DS-1", "rule": "control_character"} in outcomes["duckdb"][1]


@pytest.mark.postgres
def test_faults_analyst_cannot_write(tmp_path: Path) -> None:
    import psycopg

    from pipeline.warehouse.grants import grant_analyst_role
    from tests.services import scratch_database

    with scratch_database("ehr_test_analyst") as url:
        group, member = f"ehr_analyst_f{os.getpid()}", f"analyst_f{os.getpid()}"
        with open_warehouse(url):
            pass  # creates the schema
        try:
            grant_analyst_role(url, role=group)
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f"CREATE ROLE {member} LOGIN IN ROLE {group}")
            member_url = url.replace("postgresql://postgres@", f"postgresql://{member}@")
            with psycopg.connect(member_url, autocommit=True) as analyst:
                analyst.execute("SELECT count(*) FROM ehr.notes").fetchone()
                for statement in ("DELETE FROM ehr.notes", "UPDATE ehr.pipeline_runs SET status = 'success'",
                                  "DROP TABLE ehr.labs"):
                    with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.DependentObjectsStillExist)):
                        analyst.execute(statement)
        finally:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f"DROP ROLE IF EXISTS {member}")
                if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [group]).fetchone():
                    admin.execute(f"DROP OWNED BY {group}")
                    admin.execute(f"DROP ROLE {group}")


@pytest.mark.postgres
def test_faults_password_never_logged_at_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.services import scratch_database

    password = "pw-Never-Logged-42"
    source = write_folder(tmp_path / "src")
    with scratch_database("ehr_test_pwlog") as url:
        secret_url = url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
        caplog.set_level(logging.DEBUG)
        settings = load_settings(workdir=tmp_path / "w", source_path=source, warehouse_url=secret_url,
                                 ner_enabled=False, risk_enabled=False)
        nightly.run_day(D2, settings=settings, ner_enabled=False, risk_enabled=False)
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "pipeline" in logged  # DEBUG logging did capture the run
    assert password not in logged
