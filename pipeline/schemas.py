"""Table contracts, read from ``schemas/tables/*.yaml`` (data, not code)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyarrow as pa
import yaml

from pipeline.config import SCHEMAS_DIR

INPUT_TABLES: tuple[str, ...] = ("patients", "admissions", "diagnoses", "labs", "prescriptions", "notes")
OUTPUT_TABLES: tuple[str, ...] = (
    "note_entities",
    "admission_risk",
    "quarantine",
    "validation_results",
    "pipeline_runs",
)

_ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "int32": pa.int32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("s"),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    description: str = ""
    # Clinical narrative (note text): never copied verbatim into quarantine payloads, which analysts can read.
    free_text: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.type]


@dataclass(frozen=True)
class TableContract:
    name: str
    kind: str
    primary_key: tuple[str, ...]
    columns: tuple[Column, ...]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def empty(self) -> pa.Table:
        return self.arrow_schema.empty_table()


@cache
def contract(name: str, schemas_dir: Path = SCHEMAS_DIR) -> TableContract:
    path = schemas_dir / "tables" / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"no table contract {name!r} (looked for {path})")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    columns = []
    for col in raw["columns"]:
        if col["type"] not in _ARROW_TYPES:
            raise ValueError(f"{path}: column {col['name']} has unknown type {col['type']!r}")
        columns.append(Column(col["name"], col["type"], bool(col["nullable"]), col.get("description", ""),
                              bool(col.get("free_text", False))))
    return TableContract(raw["name"], raw.get("kind", "input"), tuple(raw.get("primary_key") or ()), tuple(columns))


def arrow_schema(name: str) -> pa.Schema:
    return contract(name).arrow_schema


def raw_arrow_schema(name: str) -> pa.Schema:
    """The contract's columns and types with every column nullable: the raw lake stage holds what the source
    delivered, and a missing required value is validation's to quarantine (with a rule), not a write error."""
    return pa.schema([f.with_nullable(True) for f in arrow_schema(name)])


def conform(table: pa.Table, name: str, *, raw: bool = False) -> pa.Table:
    """Select and cast ``table`` to the contract's columns and order; missing columns fail loudly.

    ``raw``: keep every column nullable (see :func:`raw_arrow_schema`).
    """
    schema = raw_arrow_schema(name) if raw else arrow_schema(name)
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"table {name}: missing columns {missing}")
    arrays = [table.column(f.name).cast(f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def free_text_columns(name: str) -> tuple[str, ...]:
    """Columns of table ``name`` marked ``free_text: true`` in its contract (e.g. ``notes.text``)."""
    return tuple(c.name for c in contract(name).columns if c.free_text)


FINGERPRINT_TYPE = pa.struct([("sha256", pa.string()), ("chars", pa.int64())])


def redact_free_text(name: str, rows: pa.Table) -> pa.Table:
    """``rows`` of table ``name`` with each free-text column replaced by ``{sha256, chars}`` of its value.

    Used for quarantine payloads (set aside at extraction or at validation): the other columns stay, so an
    engineer can find the row in the source, and the hash shows whether a corrected resend is the same text,
    but the text itself (which may carry the identifiers that set the row aside) never reaches the warehouse.
    The hash is over the UTF-8 text as read (bytes that were not UTF-8 appear as U+FFFD); nulls stay null.
    Only set-aside rows pass through here, so the per-value hashing is not on a hot path.

    >>> t = pa.table({"note_id": ["1-DS-1", "2-DS-1"], "text": ["abc", None]})
    >>> redact_free_text("notes", t).to_pylist()[0]["text"]["chars"]
    3
    """
    for column in free_text_columns(name):
        if column not in rows.column_names:
            continue
        values = rows.column(column).to_pylist()
        fingerprints = [
            None if value is None else {
                "sha256": hashlib.sha256(value if isinstance(value, bytes) else str(value).encode("utf-8")).hexdigest(),
                "chars": len(value if isinstance(value, bytes) else str(value)),
            }
            for value in values
        ]
        index = rows.column_names.index(column)
        rows = rows.set_column(index, pa.field(column, FINGERPRINT_TYPE), pa.array(fingerprints, FINGERPRINT_TYPE))
    return rows
