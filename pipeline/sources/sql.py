"""A SQL database holding the MIMIC-IV tables (any SQLAlchemy URL), read as text like the files.

Database timestamps are rendered as ``YYYY-MM-DD HH:MM:SS`` and numbers as their decimal text before
the common typing step, so a SQL source goes through exactly the checks a file source does.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import yaml

from pipeline.config import SCHEMAS_DIR
from pipeline.sources.base import SourceError
from pipeline.sources.files import load_mapping


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class SqlReader:
    layout = "sql"

    def __init__(self, url: str, schema: str | None = None) -> None:
        import sqlalchemy as sa

        self._sa = sa
        try:
            self.engine = sa.create_engine(url)
            with self.engine.connect():
                pass
        except Exception as exc:
            safe = sa.engine.make_url(url).render_as_string(hide_password=True)
            raise SourceError(f"cannot connect to the SQL source {safe}: {type(exc).__name__}") from None
        self.schema = schema
        self.mapping = load_mapping("mimic4")
        spec = yaml.safe_load((SCHEMAS_DIR / "sources" / "sql.yaml").read_text(encoding="utf-8"))
        self.table_names: dict[str, str] = spec["tables"]

    def read(self, table: str) -> pa.Table:
        sa = self._sa
        spec = self.mapping[table]
        source_table = self.table_names[table]
        inspector = sa.inspect(self.engine)
        if not inspector.has_table(source_table, schema=self.schema):
            raise SourceError(f"SQL source: table {source_table} not found")
        present = {c["name"].lower(): c["name"] for c in inspector.get_columns(source_table, schema=self.schema)}
        missing = [src for canon, src in spec.columns.items() if src.lower() not in present and canon not in spec.optional]
        if missing:
            raise SourceError(f"SQL source table {source_table}: required column(s) missing: {', '.join(missing)}")
        wanted = {canon: present[src.lower()] for canon, src in spec.columns.items() if src.lower() in present}
        tbl = sa.Table(source_table, sa.MetaData(), schema=self.schema, autoload_with=self.engine)
        query = sa.select(*[tbl.c[actual].label(canon) for canon, actual in wanted.items()])
        columns: dict[str, list[str | None]] = {canon: [] for canon in wanted}
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(query)
            for chunk in result.partitions(50_000):
                for canon, values in zip(wanted, zip(*chunk, strict=True), strict=True) if chunk else ():
                    columns[canon].extend(_as_text(v) for v in values)
        n = len(next(iter(columns.values()))) if columns else 0
        out = {canon: pa.array(values, pa.string()) for canon, values in columns.items()}
        for canon in spec.columns:
            out.setdefault(canon, pa.nulls(n, pa.string()))
        out["_bad_encoding"] = pa.array([False] * n, pa.bool_())
        return pa.table(out)
