"""The warehouse schema on the server (pipeline/warehouse/postgres/schema.py): which tables the DDL
partitions, the DDL fingerprint, the live-table check before a load, and the migration of tables an
older version created unpartitioned."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from pipeline.warehouse.base import SchemaMismatchError
from pipeline.warehouse.ddl import schema_scripts
from pipeline.warehouse.postgres import PostgresWarehouse
from pipeline.warehouse.postgres import schema as pg_schema
from pipeline.warehouse.postgres.schema import partitioned_ddl
from tests.warehouse.conftest import DAY1, DAY2, make_day, make_runs, scratch_database, sort_rows

from .conftest import PARTITIONED, count_rows, day_rows, partitions_of, stray_tables

pytestmark = pytest.mark.postgres


def test_postgres_schema_ddl_partitions_the_large_tables_only() -> None:
    assert sorted(partitioned_ddl()) == list(PARTITIONED)


def test_postgres_schema_fingerprint_changes_with_any_script_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    scripts = schema_scripts("postgres")
    assert len(scripts) > 2
    base = pg_schema.ddl_fingerprint()
    assert base.startswith("ehr-ddl-sha256:") and pg_schema.ddl_fingerprint() == base
    seen = {base}
    for variant in (
        [*scripts[:-1], scripts[-1] + "\n-- changed"],  # a view edited
        [*scripts, "CREATE OR REPLACE VIEW ehr.v_new AS SELECT 1;"],  # a view added
        [scripts[0] + scripts[1], *scripts[2:]],  # the same text cut elsewhere is other DDL
    ):
        monkeypatch.setattr(pg_schema, "schema_scripts", lambda dialect, variant=variant: variant)
        seen.add(pg_schema.ddl_fingerprint())
    assert len(seen) == 4


def test_postgres_schema_live_table_mismatch_names_table_and_column_and_writes_nothing(pg_url: str) -> None:
    # a database of its own: dropping and re-adding a column moves it, and the shared one must keep its layout
    with scratch_database("ehr_test_mismatch") as url:
        with PostgresWarehouse(url) as w:
            w.replace_days({"notes": make_day("notes", DAY1)}, DAY1)
            w.execute_script("ALTER TABLE ehr.notes DROP COLUMN note_type")
        with PostgresWarehouse(url) as w:
            with pytest.raises(SchemaMismatchError, match=r"ehr\.notes.*'note_type'"):
                w.replace_days({"notes": make_day("notes", DAY1, version=2)}, DAY1)
            assert count_rows(w, "notes", DAY1) == 5
            assert (
                w.query("SELECT note_seq FROM ehr.notes WHERE ds = ? ORDER BY note_id", [DAY1])
                .column(0)
                .to_pylist()
                == make_day("notes", DAY1).column("note_seq").to_pylist()
            )
            # a wrong type is refused the same way
            w.execute_script("ALTER TABLE ehr.notes ADD COLUMN note_type integer")
            w._checked_tables.clear()
            with pytest.raises(SchemaMismatchError, match=r"ehr\.notes.*'note_type' is integer"):
                w.replace_days({"notes": make_day("notes", DAY1, version=2)}, DAY1)


def test_postgres_schema_live_column_order_and_extra_columns(pg_url: str) -> None:
    """Rows land in the right columns whatever the live table's physical column order (migrated tables)."""
    with scratch_database("ehr_test_layout") as url, PostgresWarehouse(url) as w:
        # a small table whose columns were reordered by a migration and that gained a nullable column
        w.execute_script(
            "ALTER TABLE ehr.admissions DROP COLUMN insurance; ALTER TABLE ehr.admissions ADD COLUMN insurance text;"
            "ALTER TABLE ehr.admissions ADD COLUMN reviewed_by text"
        )
        # a large one whose columns were reordered the same way
        w.execute_script(
            "ALTER TABLE ehr.notes DROP COLUMN note_type; ALTER TABLE ehr.notes ADD COLUMN note_type text"
        )
        w._checked_tables.clear()
        admissions, notes = make_day("admissions", DAY1), make_day("notes", DAY1)
        w.replace_days({"admissions": admissions, "notes": notes}, DAY1)
        cols = ", ".join(admissions.column_names)
        assert (
            sort_rows(w.query(f"SELECT {cols} FROM ehr.admissions")).to_pylist()
            == sort_rows(admissions).to_pylist()
        )
        cols = ", ".join(notes.column_names)
        assert sort_rows(w.query(f"SELECT {cols} FROM ehr.notes")).to_pylist() == sort_rows(notes).to_pylist()
        # pipeline_runs reordered too: run records land in their own columns
        w.execute_script(
            "ALTER TABLE ehr.pipeline_runs DROP COLUMN status CASCADE; ALTER TABLE ehr.pipeline_runs ADD COLUMN status text"
        )
        w._checked_tables.clear()
        runs = make_runs(DAY1, run_id="reordered")
        w.record_runs(runs)
        cols = ", ".join(runs.column_names)
        assert (
            sort_rows(w.query(f"SELECT {cols} FROM ehr.pipeline_runs")).to_pylist()
            == sort_rows(runs).to_pylist()
        )
        cols = ", ".join(notes.column_names)
        # a partitioned table cannot carry columns outside the contract: a new day partition must match it
        w.execute_script("ALTER TABLE ehr.notes ADD COLUMN reviewed_by text")
        w._checked_tables.clear()
        with pytest.raises(
            SchemaMismatchError,
            match=r"ehr\.notes: the partitioned table has columns outside the contract \['reviewed_by'\]",
        ):
            w.replace_days({"notes": make_day("notes", DAY1, version=2)}, DAY1)
        assert sort_rows(w.query(f"SELECT {cols} FROM ehr.notes")).to_pylist() == sort_rows(notes).to_pylist()


def _old_layout_ddl() -> str:
    """The warehouse as the previous version created it: the same tables, none partitioned, and the views."""
    ddl = "\n".join(schema_scripts("postgres"))
    return ddl.replace(" PARTITION BY LIST (ds)", "").replace(' COLLATE "C"', "")


def test_postgres_schema_migrate_an_unpartitioned_table_with_its_rows_and_grants(pg_url: str) -> None:
    import psycopg

    reader = f"ehr_test_reader_{os.getpid()}"  # roles are server-wide: one per test run
    with scratch_database("ehr_test_migrate") as url:
        old_rows = pa.concat_tables([make_day("notes", DAY1, rows=4), make_day("notes", DAY2, rows=3)])
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(_old_layout_ddl())
            con.execute(
                f"DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{reader}') "
                f"THEN CREATE ROLE {reader} NOLOGIN; END IF; END$$"
            )
            con.execute(f"GRANT SELECT ON ehr.notes, ehr.v_patient_problems TO {reader}")
            with con.cursor().copy(f"COPY ehr.notes ({', '.join(old_rows.column_names)}) FROM STDIN") as copy:
                for row in old_rows.to_pylist():
                    copy.write_row(list(row.values()))
        try:
            with PostgresWarehouse(url) as w:  # ensure_schema migrates
                assert sorted(partitions_of(w, "notes")) == ["notes_20260101", "notes_20260102"]
                assert (
                    sort_rows(w.query("SELECT * FROM ehr.notes")).to_pylist()
                    == sort_rows(old_rows).to_pylist()
                )
                assert stray_tables(w) == []
                for relation in ("ehr.notes", "ehr.v_patient_problems"):
                    granted = w.query(
                        "SELECT has_table_privilege(?, ?, 'SELECT') AS ok", [reader, relation]
                    ).column("ok")[0]
                    assert granted.as_py(), relation
                partitioned = w.query(
                    "SELECT relname FROM pg_class WHERE relkind = 'p' AND relnamespace = 'ehr'::regnamespace "
                    "ORDER BY 1"
                )
                assert partitioned.column(0).to_pylist() == list(PARTITIONED)
                # loads work on the migrated table, and the views were recreated on it
                w.replace_days({"notes": make_day("notes", DAY1, version=2)}, DAY1)
                assert day_rows(w, "notes", DAY1).num_rows == 5
                w.query("SELECT * FROM ehr.v_patient_problems LIMIT 1")
                collation = (
                    w.query(
                        "SELECT collation_name FROM information_schema.columns "
                        "WHERE table_schema = 'ehr' AND table_name = 'notes' AND column_name = 'note_id'"
                    )
                    .column(0)[0]
                    .as_py()
                )
                assert collation == "C"
        finally:
            with psycopg.connect(url, autocommit=True) as con:
                con.execute(f"DROP OWNED BY {reader}")
            with psycopg.connect(pg_url, autocommit=True) as con:
                con.execute(f"DROP ROLE IF EXISTS {reader}")


def test_postgres_schema_primary_keys_follow_the_contract_on_a_live_warehouse(pg_url: str) -> None:
    """A warehouse built when prescriptions were keyed by pharmacy_id alone gets the component key on the
    next ensure_schema, and then loads the components of one order."""
    import psycopg

    with scratch_database("ehr_test_pk") as url:
        with PostgresWarehouse(url):
            pass  # the current schema
        with psycopg.connect(url, autocommit=True) as con:  # as an older version left it
            con.execute("ALTER TABLE ehr.prescriptions DROP CONSTRAINT prescriptions_pkey, "
                        "ADD PRIMARY KEY (prescription_id)")
            con.execute("ALTER TABLE ehr.prescriptions ALTER COLUMN drug_type DROP NOT NULL")
            con.execute("COMMENT ON SCHEMA ehr IS 'an older version'")
        with PostgresWarehouse(url) as w:
            key = w.query(
                "SELECT a.attname AS name FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid "
                "AND a.attnum = ANY(c.conkey) WHERE c.conrelid = 'ehr.prescriptions'::regclass AND c.contype = 'p' "
                "ORDER BY array_position(c.conkey, a.attnum)").column("name").to_pylist()
            assert key == ["prescription_id", "drug_type", "drug"]
            day = make_day("prescriptions", DAY1, rows=2)
            components = day.set_column(day.schema.get_field_index("prescription_id"), "prescription_id",
                                        pa.array([7, 7], pa.int64()))
            components = components.set_column(components.schema.get_field_index("drug_type"), "drug_type",
                                               pa.array(["MAIN", "BASE"]))
            w.replace_days({"prescriptions": components}, DAY1)
            assert count_rows(w, "prescriptions", DAY1) == 2
