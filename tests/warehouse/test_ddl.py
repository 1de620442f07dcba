"""Warehouse DDL generated from the contracts (pipeline/warehouse/ddl.py), checked in real engines: the tables
a DuckDB file and a PostgreSQL database get are compared with schemas/tables/*.yaml column by column, and
what each engine hands back is the contract's Arrow schema."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import pipeline.contracts as contracts
from pipeline.contracts import TableContract, all_contracts, arrow_schema, contract
from pipeline.warehouse.ddl import (
    SQL_TYPES,
    WAREHOUSE_TABLES,
    create_table_sql,
    index_name,
    partitioned_tables,
)
from pipeline.warehouse.duckdb import DuckDBWarehouse

from .conftest import scratch_database


def _expected_columns(spec: TableContract, dialect: str) -> list[tuple[str, str, bool]]:
    return [(c.name, SQL_TYPES[dialect][c.type], c.nullable) for c in spec.columns]


def test_ddl_create_table_from_a_hand_built_contract() -> None:
    spec = TableContract.model_validate(
        {
            "name": "visits",
            "description": "one row per visit",
            "kind": "input",
            "primary_key": ["visit_id"],
            "columns": [
                {"name": "visit_id", "type": "string", "nullable": False},
                {"name": "seen_at", "type": "timestamp", "nullable": True},
                {"name": "ds", "type": "date", "nullable": False},
            ],
            "warehouse": {
                "postgres": {
                    "partition_by": "ds",
                    "primary_key": ["visit_id", "ds"],
                    "indexes": [["seen_at"], ["ds", "seen_at"]],
                    "collate": {"visit_id": "C"},
                }
            },
        }
    )
    assert create_table_sql(spec, "postgres").splitlines()[2:] == [
        "CREATE TABLE IF NOT EXISTS ehr.visits (",
        '    visit_id text COLLATE "C" NOT NULL,',
        "    seen_at timestamp without time zone,",
        "    ds date NOT NULL,",
        "    PRIMARY KEY (visit_id, ds)",
        ") PARTITION BY LIST (ds);",
        "CREATE INDEX IF NOT EXISTS visits_seen_at_idx ON ehr.visits (seen_at);",
        "CREATE INDEX IF NOT EXISTS visits_ds_seen_at_idx ON ehr.visits (ds, seen_at);",
    ]
    assert create_table_sql(spec, "duckdb").splitlines()[2:] == [
        "CREATE TABLE IF NOT EXISTS ehr.visits (",
        "    visit_id VARCHAR NOT NULL,",
        "    seen_at TIMESTAMP,",
        "    ds DATE NOT NULL",
        ");",
    ]
    with pytest.raises(ValueError, match="unknown SQL dialect 'oracle'"):
        create_table_sql(spec, "oracle")


def test_ddl_types_cover_every_contract_type() -> None:
    for dialect in SQL_TYPES.values():
        assert set(dialect) == set(contracts.ARROW_TYPES)


def test_ddl_every_small_postgres_table_finds_its_day_by_index() -> None:
    """A day of a table that is not partitioned is replaced by DELETE ... WHERE ds: it needs an index led by ds."""
    for name in WAREHOUSE_TABLES:
        options = contract(name).warehouse.postgres
        if options.partition_by:
            continue
        leading = [index[0] for index in options.indexes] + list(options.primary_key[:1])
        assert "ds" in leading, name


# --- DuckDB ----------------------------------------------------------------------------------------
def test_ddl_duckdb_catalog_matches_the_contracts(tmp_path: Path) -> None:
    with DuckDBWarehouse(tmp_path / "w.duckdb") as duck:
        rows = duck.query(
            "SELECT table_name, column_name, data_type, is_nullable FROM duckdb_columns() "
            "WHERE schema_name = 'ehr' AND table_name IN (SELECT table_name FROM duckdb_tables() "
            "WHERE schema_name = 'ehr') ORDER BY table_name, column_index"
        ).to_pylist()
        keys = duck.query(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE schema_name = 'ehr' AND constraint_type = 'PRIMARY KEY'"
        ).to_pylist()
        indexes = duck.query("SELECT index_name, table_name FROM duckdb_indexes() WHERE schema_name = 'ehr'")
        read_back = {name: duck.query(f"SELECT * FROM ehr.{name} LIMIT 0").schema for name in WAREHOUSE_TABLES}
    catalog: dict[str, list[tuple[str, str, bool]]] = {}
    for row in rows:
        catalog.setdefault(row["table_name"], []).append(
            (row["column_name"], row["data_type"], row["is_nullable"])
        )
    assert sorted(catalog) == sorted(WAREHOUSE_TABLES)
    for name in WAREHOUSE_TABLES:
        assert catalog[name] == _expected_columns(contract(name), "duckdb"), name
        # what DuckDB hands back is the contract's Arrow types (timestamps included: microseconds)
        assert read_back[name].types == arrow_schema(name).types, name
    assert {r["table_name"]: tuple(r["constraint_column_names"]) for r in keys} == {
        n: contract(n).warehouse.duckdb.primary_key for n in WAREHOUSE_TABLES if contract(n).warehouse.duckdb.primary_key
    }
    assert sorted(indexes.column("index_name").to_pylist()) == sorted(
        index_name(n, cols) for n in WAREHOUSE_TABLES for cols in contract(n).warehouse.duckdb.indexes
    )


# --- PostgreSQL ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_ddl_url() -> Iterator[str]:
    from pipeline.warehouse.postgres import PostgresWarehouse

    with scratch_database("ehr_test_ddl") as url:
        PostgresWarehouse(url).close()  # ensure_schema: the generated DDL
        yield url


def _pg_rows(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as con:
        return list(con.execute(sql, params).fetchall())


@pytest.mark.postgres
def test_ddl_postgres_catalog_matches_the_contracts(pg_ddl_url: str) -> None:
    columns = _pg_rows(
        pg_ddl_url,
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, co.collname "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100 "  # 100: the default
        "WHERE n.nspname = 'ehr' AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.attnum > 0 "
        "AND NOT a.attisdropped ORDER BY c.relname, a.attnum",
    )
    catalog: dict[str, list[tuple[str, str, bool]]] = {}
    collations: dict[str, dict[str, str]] = {}
    for table, column, sql_type, nullable, collation in columns:
        catalog.setdefault(table, []).append((column, sql_type, nullable))
        if collation:
            collations.setdefault(table, {})[column] = collation
    assert sorted(catalog) == sorted(WAREHOUSE_TABLES)
    for name in WAREHOUSE_TABLES:
        assert catalog[name] == _expected_columns(contract(name), "postgres"), name
    assert collations == {n: contract(n).warehouse.postgres.collate for n in WAREHOUSE_TABLES
                          if contract(n).warehouse.postgres.collate}


@pytest.mark.postgres
def test_ddl_postgres_keys_indexes_and_partitions_match_the_contracts(pg_ddl_url: str) -> None:
    keys = _pg_rows(
        pg_ddl_url,
        "SELECT c.relname, array_agg(a.attname ORDER BY k.ord) FROM pg_constraint con "
        "JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
        "WHERE n.nspname = 'ehr' AND con.contype = 'p' AND NOT c.relispartition GROUP BY c.relname",
    )
    assert {t: tuple(cols) for t, cols in keys} == {
        n: contract(n).warehouse.postgres.primary_key for n in WAREHOUSE_TABLES
        if contract(n).warehouse.postgres.primary_key
    }
    indexes = _pg_rows(
        pg_ddl_url,
        "SELECT i.relname, c.relname, array_agg(a.attname ORDER BY k.ord) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
        "WHERE n.nspname = 'ehr' AND NOT x.indisprimary GROUP BY i.relname, c.relname",
    )
    assert sorted((i, t, tuple(cols)) for i, t, cols in indexes) == sorted(
        (index_name(n, cols), n, cols) for n in WAREHOUSE_TABLES for cols in contract(n).warehouse.postgres.indexes
    )
    partitioned = _pg_rows(
        pg_ddl_url,
        "SELECT c.relname, p.partstrat::text, a.attname FROM pg_partitioned_table p "
        "JOIN pg_class c ON c.oid = p.partrelid "
        "JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]",
    )
    assert sorted(partitioned) == [(t, "l", "ds") for t in sorted(partitioned_tables("postgres"))]
    assert sorted(partitioned_tables("postgres")) == ["labs", "note_entities", "notes"]


@pytest.mark.postgres
def test_ddl_postgres_hands_back_the_contract_arrow_types(pg_ddl_url: str) -> None:
    from pipeline.warehouse.postgres import PostgresWarehouse

    with PostgresWarehouse(pg_ddl_url) as pg:
        for name in WAREHOUSE_TABLES:
            got = pg.query(f"SELECT * FROM ehr.{name} LIMIT 0").schema
            assert got.names == arrow_schema(name).names, name
            assert got.types == arrow_schema(name).types, name


@pytest.mark.postgres
def test_ddl_postgres_follows_a_contract_change(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Editing a YAML is all it takes: the next open of the warehouse applies the new DDL (its fingerprint
    changed), here a new index on ehr.quarantine."""
    from pipeline.warehouse.postgres import PostgresWarehouse

    tables = tmp_path / "tables"
    shutil.copytree(contracts.TABLES_DIR, tables)
    spec = yaml.safe_load((tables / "quarantine.yaml").read_text(encoding="utf-8"))
    spec["warehouse"]["postgres"]["indexes"].append(["rule"])
    (tables / "quarantine.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    with scratch_database("ehr_test_ddl_change") as url:
        PostgresWarehouse(url).close()
        assert not _pg_rows(url, "SELECT 1 FROM pg_class WHERE relname = 'quarantine_rule_idx'")
        monkeypatch.setattr(contracts, "TABLES_DIR", tables)
        contracts.contract.cache_clear()
        contracts.all_contracts.cache_clear()
        try:
            assert contract("quarantine").warehouse.postgres.indexes[-1] == ("rule",)
            PostgresWarehouse(url).close()
        finally:
            monkeypatch.undo()
            contracts.contract.cache_clear()
            contracts.all_contracts.cache_clear()
        assert _pg_rows(url, "SELECT 1 FROM pg_class WHERE relname = 'quarantine_rule_idx'") == [(1,)]
    assert contract("quarantine").warehouse.postgres.indexes == (("ds",), ("source_table",))
    assert all_contracts()["quarantine"] is contract("quarantine")

