"""Connecting to the PostgreSQL warehouse (pipeline/warehouse/postgres/connection.py): wrong password,
unreachable server, no secret in any message; the URL handed to libpq and the placeholders.

The test server trusts loopback (any password is accepted), so a wrong password is played by a tiny
fake PostgreSQL server on a loopback port: it answers the startup message with
AuthenticationCleartextPassword, receives the password libpq sends, and refuses it with the
ErrorResponse a real server sends (FATAL 28P01). No cluster configuration is touched.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import traceback
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest

from pipeline.warehouse.base import WarehouseError, open_warehouse
from pipeline.warehouse.postgres import PostgresWarehouse
from pipeline.warehouse.postgres.connection import ConnectionTarget, libpq_uri, redact, translate_placeholders

PASSWORD = "Wr0ng:p@ss/w%rd-91"  # needs percent-encoding in a URL: both spellings must stay hidden
SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104


class FakePostgres:
    """A loopback server that asks for a cleartext password and rejects it as a real server would."""

    def __init__(self) -> None:
        self.passwords: list[str] = []
        self.startups: list[dict[str, str]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakePostgres:
        self._thread.start()
        assert self._ready.wait(5), "fake server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._session, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length, code = struct.unpack("!ii", await reader.readexactly(8))
                if code in (SSL_REQUEST, GSSENC_REQUEST):  # no encryption here: libpq goes on in plain text
                    writer.write(b"N")
                    await writer.drain()
                    continue
                body = await reader.readexactly(length - 8)
                break
            fields = body.rstrip(b"\0").split(b"\0")
            startup = {k.decode(): v.decode() for k, v in zip(fields[0::2], fields[1::2], strict=True)}
            self.startups.append(startup)
            writer.write(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            await writer.drain()
            kind = await reader.readexactly(1)
            (size,) = struct.unpack("!i", await reader.readexactly(4))
            payload = await reader.readexactly(size - 4)
            if kind == b"p":
                self.passwords.append(payload.rstrip(b"\0").decode())
            error = b"".join(
                code + text.encode() + b"\0"
                for code, text in (
                    (b"S", "FATAL"),
                    (b"V", "FATAL"),
                    (b"C", "28P01"),
                    (b"M", f'password authentication failed for user "{startup.get("user", "")}"'),
                )
            )
            error += b"\0"
            writer.write(b"E" + struct.pack("!i", len(error) + 4) + error)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _url(port: int, database: str = "ehr_wh") -> str:
    return f"postgresql://ehr:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/{database}"


def _assert_no_secret(text: str, url: str) -> None:
    for secret in (PASSWORD, quote(PASSWORD, safe=""), url):
        assert secret not in text, f"secret leaked: {secret!r}"


def test_postgres_connect_wrong_password_names_host_and_database_never_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with FakePostgres() as server:
        url = _url(server.port)
        with pytest.raises(WarehouseError) as info:
            PostgresWarehouse(url, connect_timeout=5)
    message = str(info.value)
    assert server.passwords and server.passwords[0] == PASSWORD, (
        "libpq did not send the password: wrong test path"
    )
    assert server.startups[0]["database"] == "ehr_wh" and server.startups[0]["user"] == "ehr"
    assert "password authentication failed" in message
    assert (
        "127.0.0.1" in message
        and str(server.port) in message
        and "'ehr_wh'" in message
        and "'ehr'" in message
    )
    _assert_no_secret("".join(traceback.format_exception(info.value)) + caplog.text + repr(info.value), url)


def test_postgres_connect_secrets_of_the_url_are_masked_in_any_message() -> None:
    url = _url(5432)
    target = ConnectionTarget(url)
    assert PASSWORD not in str(target) and target.password == PASSWORD
    echoed = f"could not connect with {url} (password {PASSWORD}, as typed {quote(PASSWORD, safe='')})"
    cleaned = redact(echoed, target.secrets)
    _assert_no_secret(cleaned, url)
    assert "127.0.0.1" in cleaned


@pytest.mark.parametrize("failure", ["closed port", "wrong password"])
def test_postgres_connect_failure_fails_the_task_with_a_clear_error_and_airflow_retries_it(
    failure: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stage task with an unusable warehouse raises WarehouseError naming host and database, never the
    password; it is an ordinary exception, so Airflow retries the task (retries come from EHR_RETRIES)."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from pipeline.config import load_settings
    from pipeline.synth import generate
    from pipeline.tasks import nightly

    day = date(2026, 1, 1)
    generate(tmp_path / "source", layout="mimic4", patients=5, start=day, days=1, history_days=0, seed=3)
    caplog.set_level(logging.DEBUG)
    with FakePostgres() as server:
        url = _url(_free_port() if failure == "closed port" else server.port)
        settings = load_settings(
            workdir=tmp_path / "work", source_path=tmp_path / "source", warehouse_url=url
        )
        with pytest.raises(WarehouseError) as info:
            nightly.extract(day, run_id="connect-test", settings=settings)
    message = str(info.value)
    assert "127.0.0.1" in message and "'ehr_wh'" in message, message
    if failure == "wrong password":
        assert "password authentication failed" in message
    else:
        assert "cannot connect" in message
    _assert_no_secret("".join(traceback.format_exception(info.value)) + caplog.text, url)
    assert not issubclass(WarehouseError, (AirflowFailException, AirflowSkipException))
    assert settings.retries >= 1


def test_postgres_connect_dag_tasks_retry_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from pipeline.config import DAGS_DIR

    monkeypatch.setenv("EHR_RETRIES", "3")
    spec = importlib.util.spec_from_file_location("ehr_nightly_retries", DAGS_DIR / "ehr_nightly.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = next(v for v in vars(module).values() if getattr(v, "dag_id", None) == "ehr_nightly")
    for task_id in ("extract", "validate", "load", "report"):
        task = dag.get_task(task_id)
        assert task.retries == 3 and task.retry_exponential_backoff, task_id


def test_postgres_connect_bench_error_has_no_password(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from pipeline.bench.load import run_load_benchmark

    caplog.set_level(logging.DEBUG)
    with FakePostgres() as server:
        url = _url(server.port)
        with pytest.raises(WarehouseError, match=r"bench: cannot connect to host 127\.0\.0\.1") as info:
            run_load_benchmark(url, rows=10, out_md=tmp_path / "B.md")
    _assert_no_secret("".join(traceback.format_exception(info.value)) + caplog.text, url)
    assert not (tmp_path / "B.md").exists()


def test_postgres_connect_unsupported_url_shows_only_the_scheme() -> None:
    with pytest.raises(WarehouseError) as info:
        open_warehouse(f"mysql://ehr:{PASSWORD}@db/ehr")
    assert PASSWORD not in str(info.value) and "mysql" in str(info.value)


# pure helpers (no server) -------------------------------------------------------------------
def test_postgres_translate_placeholders_skips_literals_comments_and_dollar_quotes() -> None:
    sql = "SELECT '?', \"a?\", $$?$$, $t$?$t$ /* ? */ FROM t WHERE a = ? AND b IN (?, ?) -- ?"
    assert translate_placeholders(sql) == (
        "SELECT '?', \"a?\", $$?$$, $t$?$t$ /* ? */ FROM t WHERE a = $1 AND b IN ($2, $3) -- ?"
    )
    assert translate_placeholders("SELECT 'it''s ?' WHERE x = ?") == "SELECT 'it''s ?' WHERE x = $1"


def test_postgres_libpq_uri_drops_driver_and_airflow_extras() -> None:
    uri = libpq_uri("postgresql+psycopg://u:p@h:5433/db?__extra__=%7B%7D&sslmode=disable")
    assert uri.startswith("postgresql://u:p@h:5433/db?")
    assert "sslmode=disable" in uri and "connect_timeout=" in uri and "__extra__" not in uri


def test_postgres_redact_removes_password_url_credentials_and_failing_rows() -> None:
    message = "boom at postgresql://me:hunter2@db/x\nDETAIL:  Failing row contains (1, secret note text)."
    cleaned = redact(message, ["hunter2"])
    assert "hunter2" not in cleaned and "secret note text" not in cleaned


# the real server ----------------------------------------------------------------------------
def test_postgres_unreachable_server_names_host_port_database_not_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = _free_port()
    url = f"postgresql://ehr:pw-Unreachable-42@127.0.0.1:{port}/ehr_wh"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(WarehouseError) as info:
        open_warehouse(url)
    message = str(info.value)
    assert "127.0.0.1" in message and str(port) in message and "ehr_wh" in message
    rendered = "".join(traceback.format_exception(info.value)) + caplog.text
    assert "pw-Unreachable-42" not in rendered and url not in rendered


@pytest.mark.postgres
def test_postgres_unknown_role_message_has_no_password(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # A role the real server does not know; a real wrong password is refused by the fake server
    # above (this server trusts loopback and accepts any password).
    url = pg_url.replace("postgresql://postgres@", "postgresql://no_such_role_ehr:pw-Wrong-Secret-7@")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(WarehouseError) as info:
        PostgresWarehouse(url)
    rendered = "".join(traceback.format_exception(info.value)) + caplog.text
    assert "no_such_role_ehr" in str(info.value)
    assert "pw-Wrong-Secret-7" not in rendered
