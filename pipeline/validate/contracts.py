"""Table contracts (schemas/tables/*.yaml) as Arrow schemas, and the batch schema check."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from pipeline.validate.errors import Messages

ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "int32": pa.int32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}


@dataclass(frozen=True)
class ColumnContract:
    name: str
    type_name: str
    nullable: bool

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.type_name]

    def accepts(self, dtype: pa.DataType) -> bool:
        """Whether ``dtype`` is this column's canonical type (units and string widths are equivalent)."""
        if self.type_name == "timestamp":
            return pa.types.is_timestamp(dtype)
        if self.type_name == "string":
            return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
        if self.type_name == "date":
            return pa.types.is_date(dtype)
        return dtype == self.arrow_type


@dataclass(frozen=True)
class TableContract:
    name: str
    primary_key: tuple[str, ...]
    columns: tuple[ColumnContract, ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns])

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


@cache
def _load_contracts(contracts_dir: Path) -> dict[str, TableContract]:
    contracts = {}
    for path in sorted(contracts_dir.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        columns = tuple(
            ColumnContract(c["name"], c["type"], bool(c.get("nullable", True))) for c in spec["columns"]
        )
        contracts[spec["name"]] = TableContract(spec["name"], tuple(spec.get("primary_key") or ()), columns)
    return contracts


def load_contracts(contracts_dir: Path) -> dict[str, TableContract]:
    return _load_contracts(Path(contracts_dir).resolve())


def contract_for(contracts_dir: Path, table: str) -> TableContract:
    contracts = load_contracts(contracts_dir)
    if table not in contracts:
        raise ValueError(Messages.E202_UNKNOWN_TABLE.format(table=table, contracts_dir=contracts_dir))
    return contracts[table]


@dataclass
class SchemaCheck:
    """Outcome of checking one table against its contract."""

    table: pa.Table  # conformed: every contract column present with its canonical type
    missing: list[str]
    wrong_types: dict[str, str]  # column -> "found X, expected Y"
    uncastable: list[str]  # wrong-typed columns that could not be cast safely


def conform(table: pa.Table, contract: TableContract) -> SchemaCheck:
    """Check columns and types; add missing columns as nulls and cast wrong types where safe.

    Extra columns are kept as they are. The caller turns ``missing``/``wrong_types`` into batch
    failures and quarantines every row when ``uncastable`` is not empty.
    """
    missing: list[str] = []
    wrong: dict[str, str] = {}
    uncastable: list[str] = []
    for column in contract.columns:
        if column.name not in table.column_names:
            missing.append(column.name)
            table = table.append_column(
                pa.field(column.name, column.arrow_type), pa.nulls(table.num_rows, column.arrow_type)
            )
            continue
        dtype = table.schema.field(column.name).type
        if column.accepts(dtype):
            continue
        wrong[column.name] = f"{column.name} is {dtype}, expected {column.type_name}"
        index = table.column_names.index(column.name)
        try:
            cast = pc.cast(table.column(column.name), column.arrow_type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            uncastable.append(column.name)
            cast = pa.nulls(table.num_rows, column.arrow_type)
        table = table.set_column(index, pa.field(column.name, column.arrow_type), cast)
    return SchemaCheck(table, missing, wrong, uncastable)
