"""Connecting to PostgreSQL without leaking the password.

Connection errors name host, port, database and user; every driver message is scrubbed of the password
(as written in the URL and decoded), of credentials in any URL and of row contents before it is raised
or logged. Statements use ``?`` placeholders on every warehouse; :func:`translate_placeholders` turns
them into PostgreSQL's ``$1, $2, ...``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pipeline.warehouse.base import WarehouseError

DEFAULT_CONNECT_TIMEOUT_S = 10


class ConnectionTarget:
    """Host, port, database and user of a PostgreSQL URL, safe to print (never the password)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(_strip_driver(url))
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 5432
        self.database = unquote(parts.path.lstrip("/")) or (unquote(parts.username or "") or "postgres")
        self.user = unquote(parts.username or "") or None
        self.password = unquote(parts.password) if parts.password else None
        # the password as written in the URL (percent-encoded) and decoded: either may be echoed
        self.secrets: tuple[str, ...] = (
            tuple({parts.password, self.password, quote(self.password, safe="")} - {None, ""})  # type: ignore[arg-type]
            if parts.password
            else ()
        )

    def __str__(self) -> str:
        who = f" as user {self.user!r}" if self.user else ""
        return f"host {self.host} port {self.port} database {self.database!r}{who}"


def _strip_driver(url: str) -> str:
    """``postgresql+psycopg://`` (SQLAlchemy style) and ``postgres://`` become ``postgresql://``."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith(("postgresql", "postgres")):
        raise WarehouseError(f"not a PostgreSQL URL (expected postgresql://...): scheme {scheme!r}")
    return "postgresql://" + rest


def libpq_uri(url: str, *, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_S) -> str:
    """The URI handed to libpq: driver suffix dropped, Airflow's ``__extra__`` dropped, a connect timeout."""
    parts: SplitResult = urlsplit(_strip_driver(url))
    query = [(k, v) for k, v in parse_qsl(parts.query) if not k.startswith("__")]
    if not any(k == "connect_timeout" for k, _ in query):
        query.append(("connect_timeout", str(connect_timeout)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact(message: str, secrets: Sequence[str | None]) -> str:
    """Remove passwords, URL credentials and row contents from a driver message."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):  # longest first: no partial leaks
        message = message.replace(secret, "***")
    # user:password@ inside any URL that slipped into the message
    message = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", message)
    # ADBC repeats the statement; ours carry no data (values travel as parameters), only bulk: drop it
    message = re.sub(r"Failed to execute query '.*?': (?=ERROR:)", "", message, flags=re.DOTALL)
    message = re.sub(r"\s*Query was: .*?(?=\. SQLSTATE|$)", "", message, flags=re.DOTALL)
    # PostgreSQL echoes a failing row (which can hold note text) in its DETAIL line: keep ids out of logs too.
    message = re.sub(r"DETAIL:\s+Failing row contains .*", "DETAIL: (failing row not shown)", message)
    return message.strip()


def translate_placeholders(sql: str) -> str:
    """Turn ``?`` placeholders into PostgreSQL's ``$1, $2, ...``, leaving literals and comments alone.

    >>> translate_placeholders("SELECT '?' AS q, x FROM t WHERE a = ? AND b = ? -- why?")
    "SELECT '?' AS q, x FROM t WHERE a = $1 AND b = $2 -- why?"
    """
    out: list[str] = []
    i, n, count = 0, len(sql), 0
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:  # doubled quote inside the literal
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1])
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(sql[i:end])
            i = end
        elif ch == "$" and (m := re.match(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$", sql[i:])):
            tag = m.group(0)
            end = sql.find(tag, i + len(tag))
            end = n if end < 0 else end + len(tag)
            out.append(sql[i:end])
            i = end
        elif ch == "?":
            count += 1
            out.append(f"${count}")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)
