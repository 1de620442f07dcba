"""Warehouse DDL of both dialects, generated from the table contracts (``schemas/tables/*.yaml``).

A table's columns, types and nullability come from its contract; how a dialect stores it (primary key,
indexes, LIST partitioning by ds, collations) from the contract's ``warehouse.<dialect>`` block. Only the
schema creation (``sql/<dialect>/*.sql``), the analyst views (``sql/views/``) and the grants stay SQL
files. Print the DDL a warehouse gets with ``python -m pipeline.warehouse.ddl postgres`` (or ``duckdb``).

>>> print(create_table_sql("diagnoses", "postgres"))
-- ehr.diagnoses: Canonical input table: billed diagnoses of the day's admissions (...).
-- Generated from schemas/tables/diagnoses.yaml (pipeline/warehouse/ddl.py): edit the contract.
CREATE TABLE IF NOT EXISTS ehr.diagnoses (
    subject_id bigint NOT NULL,
    hadm_id bigint NOT NULL,
    seq_num integer NOT NULL,
    icd_code text NOT NULL,
    icd_version integer NOT NULL,
    ds date NOT NULL,
    PRIMARY KEY (hadm_id, seq_num, icd_code, icd_version)
);
CREATE INDEX IF NOT EXISTS diagnoses_ds_idx ON ehr.diagnoses (ds);
<BLANKLINE>
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from pipeline.config import SQL_DIR
from pipeline.contracts import INPUT_TABLES, OUTPUT_TABLES, TableContract, contract

#: Contract type → the dialect's type, spelled as its catalog reports it (DuckDB ``duckdb_columns().data_type``,
#: PostgreSQL ``format_type``), so the drift tests and the live-table check compare against the same names.
SQL_TYPES: Mapping[str, Mapping[str, str]] = {
    "duckdb": {
        "int64": "BIGINT",
        "int32": "INTEGER",
        "float64": "DOUBLE",
        "string": "VARCHAR",
        "bool": "BOOLEAN",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
    },
    "postgres": {
        "int64": "bigint",
        "int32": "integer",
        "float64": "double precision",
        "string": "text",
        "bool": "boolean",
        "date": "date",
        "timestamp": "timestamp without time zone",
    },
}
WAREHOUSE_TABLES: tuple[str, ...] = INPUT_TABLES + OUTPUT_TABLES


def index_name(table: str, columns: tuple[str, ...]) -> str:
    return f"{table}_{'_'.join(columns)}_idx"


def create_table_sql(table: TableContract | str, dialect: str) -> str:
    """``CREATE TABLE IF NOT EXISTS ehr.<table>`` and its indexes in ``dialect`` (rerunnable)."""
    spec = contract(table) if isinstance(table, str) else table
    if dialect not in SQL_TYPES:
        raise ValueError(f"unknown SQL dialect {dialect!r}: expected one of {', '.join(SQL_TYPES)}")
    types, options = SQL_TYPES[dialect], getattr(spec.warehouse, dialect)
    lines = []
    for column in spec.columns:
        collation = options.collate.get(column.name)
        line = f"    {column.name} {types[column.type]}"
        line += f' COLLATE "{collation}"' if collation else ""
        line += "" if column.nullable else " NOT NULL"
        lines.append(line)
    if options.primary_key:
        lines.append(f"    PRIMARY KEY ({', '.join(options.primary_key)})")
    partition = f" PARTITION BY LIST ({options.partition_by})" if options.partition_by else ""
    statements = [
        f"-- ehr.{spec.name}: {spec.description}",
        f"-- Generated from schemas/tables/{spec.name}.yaml (pipeline/warehouse/ddl.py): edit the contract.",
        f"CREATE TABLE IF NOT EXISTS ehr.{spec.name} (",
        ",\n".join(lines),
        f"){partition};",
    ]
    statements += [
        f"CREATE INDEX IF NOT EXISTS {index_name(spec.name, cols)} ON ehr.{spec.name} ({', '.join(cols)});"
        for cols in options.indexes
    ]
    return "\n".join(statements) + "\n"


def schema_scripts(dialect: str) -> list[str]:
    """Everything ``ensure_schema`` runs, in order: schema creation (``sql/<dialect>/*.sql``), the tables of
    every contract, the analyst views (``sql/views/*.sql``)."""
    scripts = [path.read_text(encoding="utf-8") for path in sorted((SQL_DIR / dialect).glob("*.sql"))]
    scripts += [create_table_sql(name, dialect) for name in WAREHOUSE_TABLES]
    scripts += view_scripts().values()
    return scripts


def view_scripts() -> dict[str, str]:
    """The analyst views (``sql/views/*.sql``, the same in both dialects), by file name, in creation order."""
    return {path.name: path.read_text(encoding="utf-8") for path in sorted((SQL_DIR / "views").glob("*.sql"))}


def partitioned_tables(dialect: str = "postgres") -> tuple[str, ...]:
    """Tables whose contract partitions them by ds in ``dialect``."""
    return tuple(t for t in WAREHOUSE_TABLES if getattr(contract(t).warehouse, dialect).partition_by)


if __name__ == "__main__":  # pragma: no cover - a convenience for DBAs reviewing the DDL
    for script in schema_scripts(sys.argv[1] if len(sys.argv) > 1 else "postgres"):
        print(script)
