"""A SQL database holding the MIMIC-IV tables (any SQLAlchemy URL), streamed as Arrow record batches.

Where a table lives: ``schemas/sources/sql.yaml`` names each table and the schema it has in the standard
MIMIC-IV PostgreSQL build (``mimiciv_hosp``, ``mimiciv_note``). A table is looked up in the schemas of
``EHR_SOURCE_SCHEMAS`` (``mimiciv_hosp,mimiciv_note`` searches both for every table; ``notes=my_notes``
pins one table), then in its default schema, then unqualified (the connection's default schema, which is
where a SQLite file keeps everything).

How it is read: PostgreSQL through ADBC (``adbc_driver_postgresql``), which hands over Arrow record
batches straight from the wire protocol; any other database through SQLAlchemy, a fixed number of rows at
a time, each batch turned into Arrow columns with one conversion per column. The values are then
rendered as text in Arrow (timestamps as ``YYYY-MM-DD HH:MM:SS``, dates at ``00:00:00``, numbers as
decimal text, ``CHAR(n)`` right-trimmed by the query), so a SQL source goes through exactly the typing
and set-aside checks of a file source. SQLite does not check that TEXT is UTF-8: its text is fetched as
bytes and a value that is not UTF-8 flags its row (``_bad_encoding``), as a file's would, instead of
being silently replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from pipeline.config import SCHEMAS_DIR
from pipeline.contracts import INPUT_TABLES
from pipeline.sources.base import TIMESTAMP_FORMAT, SourceError, decode_utf8
from pipeline.sources.files import TableMapping, Titles, _with_titles, load_mapping

BATCH_ROWS = 50_000


def _sqlalchemy_url(url: str) -> Any:
    """The SQLAlchemy URL; a bare ``postgresql://`` uses psycopg 3 when psycopg2 is not installed."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.drivername == "postgresql":
        try:
            import psycopg2  # noqa: F401  (SQLAlchemy's default PostgreSQL driver)
        except ImportError:
            parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _to_arrow(values: tuple) -> pa.Array:
    """One fetched column → Arrow, inferring the type in one C-level pass."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # mixed Python types in one column (SQLite's dynamic typing): keep each value's own text form
        return pa.array([v if v is None or isinstance(v, bytes) else str(v).encode("utf-8") for v in values],
                        pa.binary())


def _render(values: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """A typed column as the documented text forms; (text, mask of values that were not UTF-8)."""
    kind = values.type
    if pa.types.is_null(kind):
        return pa.nulls(len(values), pa.string()), None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return values.cast(pa.string()), None
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return decode_utf8(values.cast(pa.binary()))
    if pa.types.is_timestamp(kind):
        # the contract keeps whole seconds; fractions (PostgreSQL TIMESTAMP(3)) are truncated
        return pc.strftime(values.cast(pa.timestamp("s", kind.tz), safe=False), TIMESTAMP_FORMAT), None
    if pa.types.is_date(kind):
        return pc.strftime(values.cast(pa.timestamp("s")), TIMESTAMP_FORMAT), None
    return values.cast(pa.string()), None


def parse_source_schemas(text: str | None) -> tuple[list[str], dict[str, str]]:
    """``EHR_SOURCE_SCHEMAS`` → (schemas searched for every table, schema of named tables).

    >>> parse_source_schemas("mimiciv_hosp, notes=mimiciv_note")
    (['mimiciv_hosp'], {'notes': 'mimiciv_note'})
    """
    search: list[str] = []
    per_table: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        table, sep, schema = (part.strip() for part in item.partition("="))
        if not sep:
            search.append(table)
        elif table in INPUT_TABLES and schema:
            per_table[table] = schema
        else:
            raise ValueError(f"{item!r}: expected a schema name or <table>=<schema> with a table among "
                             f"{', '.join(INPUT_TABLES)}")
    return search, per_table


class SqlReader:
    layout = "sql"

    def __init__(self, url: str, schemas: str | None = None, *, batch_rows: int = BATCH_ROWS,
                 prefer_adbc: bool = True) -> None:
        import sqlalchemy as sa

        self._sa = sa
        self.url = _sqlalchemy_url(url)
        self._safe_url = self.url.render_as_string(hide_password=True)
        try:
            self.engine = sa.create_engine(self.url)
            with self.engine.connect():
                pass
        except Exception as exc:
            raise SourceError(f"cannot connect to the SQL source {self._safe_url}: {type(exc).__name__}") from None
        self.batch_rows = batch_rows
        self.mapping = load_mapping("mimic4")
        spec = yaml.safe_load((SCHEMAS_DIR / "sources" / "sql.yaml").read_text(encoding="utf-8"))
        self.defaults: dict[str, tuple[str, str | None]] = {
            name: (entry, None) if isinstance(entry, str) else (entry["table"], entry.get("schema"))
            for name, entry in spec["tables"].items()
        }
        try:
            self.search, self.pinned = parse_source_schemas(schemas)
        except ValueError as exc:
            raise SourceError(f"EHR_SOURCE_SCHEMAS: {exc}") from None
        self._adbc = prefer_adbc and self.engine.dialect.name == "postgresql" and _adbc_available()

    # --- where ------------------------------------------------------------------------------
    def locate(self, table: str) -> tuple[str | None, str]:
        """(schema or None for unqualified, table name) of a canonical table."""
        name, default_schema = self.defaults[table]
        if table in self.pinned:
            candidates: list[str | None] = [self.pinned[table]]
        else:
            candidates = [*self.search, default_schema, None]
        inspector = self._sa.inspect(self.engine)
        tried: list[str] = []
        for schema in dict.fromkeys(candidates):  # in order, once each
            tried.append(f"{schema}.{name}" if schema else name)
            try:
                if inspector.has_table(name, schema=schema):
                    return schema, name
            except self._sa.exc.SQLAlchemyError:  # e.g. a schema SQLite does not know (no attached database)
                continue
        raise SourceError(f"SQL source {self._safe_url}: table not found (looked for {', '.join(tried)}); "
                          "set EHR_SOURCE_SCHEMAS to the schema(s) holding the MIMIC-IV tables")

    def _query(self, table: str, spec: TableMapping) -> tuple[str, list[str]]:
        sa = self._sa
        schema, name = self.locate(table)
        where = f"{schema}.{name}" if schema else name
        columns = {c["name"].lower(): c for c in sa.inspect(self.engine).get_columns(name, schema=schema)}
        missing = [src for canon, src in spec.columns.items() if src.lower() not in columns and canon not in spec.optional]
        if missing:
            raise SourceError(f"SQL source table {where}: required column(s) missing: {', '.join(missing)}")
        wanted = {canon: columns[src.lower()] for canon, src in spec.columns.items() if src.lower() in columns}
        source = sa.table(name, *[sa.column(c["name"]) for c in wanted.values()], schema=schema)
        selected = []
        for canon, col in wanted.items():
            expr = source.c[col["name"]]
            if isinstance(col["type"], sa.CHAR):  # CHAR(n) pads with blanks: 'I5023  ' is the code I5023
                expr = sa.func.rtrim(expr)
            selected.append(expr.label(canon))
        statement = sa.select(*selected).select_from(source)
        return str(statement.compile(dialect=self.engine.dialect)), list(wanted)

    def absent(self, table: str) -> str | None:
        """Why a table the layout lets a source lack is absent from this database (None: it is there)."""
        spec = self.mapping[table]
        if not spec.skip_if_absent:
            return None
        try:
            self.locate(table)
        except SourceError as exc:
            return f"the {spec.module or table} module is not in the source: {exc}"
        return None

    # --- reading ----------------------------------------------------------------------------
    def batches(self, table: str) -> Iterator[pa.Table]:
        spec = self.mapping[table]
        if self.absent(table):
            yield self._as_text(pa.table({}), spec)
            return
        sql, names = self._query(table, spec)
        titles = self._titles(spec) if spec.titles else None
        produced = False
        for batch in self._fetch(sql, names):
            produced = True
            yield self._as_text(batch, spec) if titles is None else _with_titles(self._as_text(batch, spec), *titles)
        if not produced:
            empty = self._as_text(pa.table({name: pa.array([], pa.string()) for name in names}), spec)
            yield empty if titles is None else _with_titles(empty, *titles)

    def _fetch(self, sql: str, names: list[str]) -> Iterator[pa.Table]:
        return self._adbc_batches(sql, names) if self._adbc else self._sqlalchemy_batches(sql, names)

    def _titles(self, spec: TableMapping) -> tuple[pa.Table | None, Titles | None]:
        """The procedure dictionary (code, version, title as text), when the database has it."""
        assert spec.titles is not None
        try:
            self.locate("procedure_titles")
        except SourceError:
            return None, None
        names = {"code": spec.titles.code, "title": spec.titles.title}
        if spec.titles.version:
            names["version"] = spec.titles.version
        mapping = TableMapping("", names, frozenset({"version"}))
        sql, columns = self._query("procedure_titles", mapping)
        parts = [self._as_text(batch, mapping).drop_columns(["_bad_encoding"]) for batch in self._fetch(sql, columns)]
        return (pa.concat_tables(parts).combine_chunks() if parts else None), spec.titles

    def read(self, table: str) -> pa.Table:
        """All rows at once (small tables and tests; extraction streams :meth:`batches`)."""
        return pa.concat_tables(list(self.batches(table)))

    def _adbc_batches(self, sql: str, names: list[str]) -> Iterator[pa.Table]:
        import adbc_driver_postgresql.dbapi as adbc_pg

        uri = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with adbc_pg.connect(uri) as conn, conn.cursor() as cursor:
            cursor.execute(sql)
            for batch in cursor.fetch_record_batch():
                yield pa.Table.from_batches([batch])

    def _sqlalchemy_batches(self, sql: str, names: list[str]) -> Iterator[pa.Table]:
        with self.engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            sqlite = self.engine.dialect.name == "sqlite"
            if sqlite:
                # SQLite TEXT may hold any bytes: fetch them raw, so that invalid UTF-8 is flagged, not replaced
                previous, dbapi.text_factory = dbapi.text_factory, bytes
            try:
                options = {"stream_results": True} if self.engine.dialect.supports_server_side_cursors else {}
                result = conn.execution_options(**options).exec_driver_sql(sql)
                for rows in result.partitions(self.batch_rows):
                    columns = list(zip(*rows, strict=True))
                    yield pa.table({name: _to_arrow(values) for name, values in zip(names, columns, strict=True)})
            finally:
                if sqlite:
                    dbapi.text_factory = previous

    @staticmethod
    def _as_text(batch: pa.Table, spec: TableMapping) -> pa.Table:
        n = batch.num_rows
        out: dict[str, pa.Array] = {}
        bad_encoding = pa.array(np.zeros(n, dtype=bool))
        for name in batch.column_names:
            text, bad = _render(batch.column(name).combine_chunks())
            out[name] = text
            if bad is not None:
                bad_encoding = pc.or_(bad_encoding, bad)
        for canon in spec.columns:
            out.setdefault(canon, pa.nulls(n, pa.string()))
        out["_bad_encoding"] = bad_encoding
        return pa.table(out)


def _adbc_available() -> bool:
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
    except ImportError:
        return False
    return True
