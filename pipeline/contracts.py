"""Table contracts: ``schemas/tables/<table>.yaml``, the one source of every table's shape.

Each file is read once and checked strictly (an unknown key, an unknown type, a key or index over a column
that does not exist fail loudly, naming the file). Everything else is derived from it: the Arrow schemas
used by every stage (:func:`arrow_schema`, :func:`raw_arrow_schema`), casting tables to them
(:func:`conform`), the lenient batch check validation runs (:func:`check_batch`), and the warehouse DDL of
both SQL dialects (``pipeline.warehouse.ddl``, from each contract's ``warehouse:`` block). The YAML format
is documented in ``schemas/tables/README.md``.

Timestamps are ``timestamp[us]`` (no time zone) everywhere. That is what the warehouses hold (DuckDB
``TIMESTAMP`` and PostgreSQL ``timestamp`` are microsecond counts, and both hand back ``timestamp[us]``)
and the finest unit Parquet stores that every reader agrees on; second values, which is all the sources
carry (``YYYY-MM-DD HH:MM:SS``), are exact in it, and nothing is cast on the way from the lake to the
warehouse and back.

>>> arrow_schema("diagnoses").field("icd_code")
pyarrow.Field<icd_code: string not null>
>>> arrow_schema("admissions").field("admittime").type
TimestampType(timestamp[us])
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.config import SCHEMAS_DIR

TABLES_DIR = SCHEMAS_DIR / "tables"

#: Canonical input tables, parents first (the order extraction and reports use).
INPUT_TABLES: tuple[str, ...] = (
    "patients", "admissions", "diagnoses", "procedures", "labs", "prescriptions", "icu_stays", "notes",
)
OUTPUT_TABLES: tuple[str, ...] = (
    "note_entities",
    "admission_risk",
    "quarantine",
    "validation_results",
    "pipeline_runs",
    "drift_metrics",
)

TIMESTAMP_TYPE = pa.timestamp("us")
#: Contract type name → Arrow type. The warehouse dialects map the same names in pipeline.warehouse.ddl.
ARROW_TYPES: Mapping[str, pa.DataType] = {
    "int64": pa.int64(),
    "int32": pa.int32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": TIMESTAMP_TYPE,
}
TypeName = Literal["int64", "int32", "float64", "string", "bool", "date", "timestamp"]
DIALECTS: tuple[str, ...] = ("duckdb", "postgres")

_IDENTIFIER = r"^[a-z_][a-z0-9_]*$"


class ContractError(ValueError):
    """A table contract is missing or malformed; the message names the file and what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Column(_Strict):
    name: str = Field(pattern=_IDENTIFIER)
    type: TypeName
    nullable: bool
    description: str = ""
    # Clinical narrative (note text): never copied verbatim into quarantine payloads, which analysts can read.
    free_text: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.type]

    @property
    def field(self) -> pa.Field:
        return pa.field(self.name, self.arrow_type, nullable=self.nullable)


class DialectOptions(_Strict):
    """How one SQL dialect stores the table (``warehouse.<dialect>`` in the YAML); empty means a plain table."""

    primary_key: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()  # one B-tree index per entry, named <table>_<columns>_idx
    partition_by: str | None = None  # LIST partitioning, one partition per value (PostgreSQL, ds only)
    collate: dict[str, str] = Field(default_factory=dict)  # column → collation


class WarehouseOptions(_Strict):
    duckdb: DialectOptions = DialectOptions()
    postgres: DialectOptions = DialectOptions()


class TableContract(_Strict):
    name: str = Field(pattern=_IDENTIFIER)
    kind: Literal["input", "output"]
    description: str
    primary_key: tuple[str, ...]
    columns: tuple[Column, ...] = Field(min_length=1)
    warehouse: WarehouseOptions = WarehouseOptions()

    @model_validator(mode="after")
    def _columns_exist(self) -> TableContract:
        names = [c.name for c in self.columns]
        if duplicated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"columns listed twice: {duplicated}")
        _known(names, self.primary_key, "primary_key")
        if nullable := [c for c in self.primary_key if self.column(c).nullable]:
            raise ValueError(f"primary_key columns {nullable} are nullable: a key column needs nullable: false")
        if loose := [c.name for c in self.columns if c.free_text and c.type != "string"]:
            raise ValueError(f"free_text columns {loose} are not of type string")
        for dialect in DIALECTS:
            options: DialectOptions = getattr(self.warehouse, dialect)
            where = f"warehouse.{dialect}"
            _known(names, options.primary_key, f"{where}.primary_key")
            for index in options.indexes:
                if not index:
                    raise ValueError(f"{where}.indexes: an index needs at least one column")
                _known(names, index, f"{where}.indexes")
            _known(names, tuple(options.collate), f"{where}.collate")
            if not_text := [c for c in options.collate if self.column(c).type != "string"]:
                raise ValueError(f"{where}.collate: columns {not_text} are not of type string")
            if options.partition_by is not None:
                # the loaders replace a day by swapping its partition (pipeline/warehouse/postgres/partitions.py)
                if dialect != "postgres" or options.partition_by != "ds":
                    raise ValueError(
                        f"{where}.partition_by: only PostgreSQL tables can be partitioned, and only by ds "
                        "(one partition per day)"
                    )
                if options.primary_key and options.partition_by not in options.primary_key:
                    raise ValueError(
                        f"{where}.primary_key must include the partition column {options.partition_by!r}"
                    )
        return self

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"table {self.name} has no column {name!r}")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([c.field for c in self.columns])

    @property
    def raw_arrow_schema(self) -> pa.Schema:
        """The contract's columns and types with every column nullable: the raw lake stage holds what the
        source delivered, and a missing required value is validation's to quarantine (with a rule), not a
        write error."""
        return pa.schema([c.field.with_nullable(True) for c in self.columns])

    @property
    def free_text_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.free_text)

    def empty(self) -> pa.Table:
        return self.arrow_schema.empty_table()


def _known(names: list[str], wanted: tuple[str, ...], where: str) -> None:
    if unknown := [c for c in wanted if c not in names]:
        raise ValueError(f"{where} names {unknown}, which are not columns of the table")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"{where} lists a column twice: {list(wanted)}")


def load_contract(path: Path) -> TableContract:
    """Parse and check one contract file; :class:`ContractError` names the file and the problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"{path}: cannot read the table contract: {exc}") from None
    if not isinstance(raw, dict):
        raise ContractError(f"{path}: a table contract is a mapping with name, kind, columns, ...")
    try:
        loaded = TableContract.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(err, raw) for err in exc.errors())
        raise ContractError(f"{path}: {problems} (see schemas/tables/README.md)") from None
    if loaded.name != path.stem:
        raise ContractError(f"{path}: name {loaded.name!r} differs from the file name; rename one of them")
    return loaded


def _problem(err: Mapping, raw: dict) -> str:
    """One pydantic error as ``where: what``, a column named rather than numbered."""
    loc = [str(p) for p in err["loc"]]
    columns = raw.get("columns")
    if len(loc) > 1 and loc[0] == "columns" and loc[1].isdigit() and isinstance(columns, list):
        entry = columns[int(loc[1])]
        if isinstance(entry, dict) and "name" in entry:
            loc[1] = f"[{entry['name']}]"
    where = ".".join(loc).replace(".[", "[") or "contract"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


@cache
def contract(name: str) -> TableContract:
    """The contract of table ``name`` (read once per process)."""
    if not re.match(_IDENTIFIER, name) or not (TABLES_DIR / f"{name}.yaml").is_file():
        raise ContractError(
            f"no table contract {name!r} in {TABLES_DIR}; known tables: {', '.join(sorted(all_contracts()))}"
        )
    return load_contract(TABLES_DIR / f"{name}.yaml")


@cache
def all_contracts() -> dict[str, TableContract]:
    """Every contract in ``schemas/tables/``, by table name."""
    return {path.stem: contract(path.stem) for path in sorted(TABLES_DIR.glob("*.yaml"))}


def arrow_schema(name: str) -> pa.Schema:
    return contract(name).arrow_schema


def raw_arrow_schema(name: str) -> pa.Schema:
    return contract(name).raw_arrow_schema


def conform(table: pa.Table, name: str, *, raw: bool = False) -> pa.Table:
    """Select and cast ``table`` to the contract's columns and order; missing columns fail loudly.

    ``raw``: keep every column nullable (see :attr:`TableContract.raw_arrow_schema`).
    """
    schema = raw_arrow_schema(name) if raw else arrow_schema(name)
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"table {name}: missing columns {missing}")
    arrays = [table.column(f.name).cast(f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


# --- the batch check of the validation stage ------------------------------------------------------
_EQUIVALENT = {
    # other encodings of the same values: accepted, and cast to the contract type
    "timestamp": pa.types.is_timestamp,
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "date": pa.types.is_date,
}


@dataclass
class SchemaCheck:
    """Outcome of checking one table against its contract."""

    table: pa.Table  # conformed: every contract column present with its canonical type
    missing: list[str]
    wrong_types: dict[str, str]  # column -> "found X, expected Y"
    uncastable: list[str]  # wrong-typed columns that could not be cast safely


def check_batch(table: pa.Table, name: str) -> SchemaCheck:
    """Check columns and types against the contract of ``name``; add missing columns as nulls and cast
    wrong types where safe.

    Another encoding of the same values (a timestamp in another unit, a large string, date64) is not a
    wrong type, but is cast too. Extra columns are kept as they are. The caller turns ``missing`` and
    ``wrong_types`` into batch failures and quarantines every row when ``uncastable`` is not empty.

    >>> check = check_batch(pa.table({"subject_id": ["7"], "gender": ["F"]}), "patients")
    >>> check.missing, check.wrong_types["subject_id"]
    (['anchor_age', 'anchor_year', 'anchor_year_group', 'dod', 'ds'], 'subject_id is string, expected int64')
    >>> check.table.column("subject_id").to_pylist()
    [7]
    """
    missing: list[str] = []
    wrong: dict[str, str] = {}
    uncastable: list[str] = []
    for column in contract(name).columns:
        want = column.arrow_type
        if column.name not in table.column_names:
            missing.append(column.name)
            table = table.append_column(pa.field(column.name, want), pa.nulls(table.num_rows, want))
            continue
        found = table.schema.field(column.name).type
        if found == want:
            continue
        equivalent = _EQUIVALENT.get(column.type, lambda _: False)(found)
        if not equivalent:
            wrong[column.name] = f"{column.name} is {found}, expected {column.type}"
        try:
            cast = pc.cast(table.column(column.name), want, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            wrong.setdefault(column.name, f"{column.name} is {found}, expected {column.type}")
            uncastable.append(column.name)
            cast = pa.nulls(table.num_rows, want)
        table = table.set_column(table.column_names.index(column.name), pa.field(column.name, want), cast)
    return SchemaCheck(table, missing, wrong, uncastable)


# --- free text ------------------------------------------------------------------------------------
def free_text_columns(name: str) -> tuple[str, ...]:
    """Columns of table ``name`` marked ``free_text: true`` in its contract (e.g. ``notes.text``)."""
    return contract(name).free_text_columns


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
