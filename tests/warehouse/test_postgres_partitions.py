"""Day partitions of the large PostgreSQL tables: built aside, swapped in, never half visible.

labs, notes and note_entities are LIST-partitioned by ds (their contracts' warehouse.postgres block); replace_days builds a new
partition per day in its transaction and swaps it for the old one (see pipeline/warehouse/postgres.py).
"""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta

import pyarrow as pa
import pytest

import pipeline.warehouse.postgres as pg_module
from pipeline.warehouse.base import SchemaMismatchError, WarehouseError
from pipeline.warehouse.ddl import WAREHOUSE_TABLES, schema_scripts
from pipeline.warehouse.postgres import PostgresWarehouse, partitioned_ddl

from .conftest import DAY1, DAY2, make_day, make_runs, scratch_database, sort_rows

pytestmark = pytest.mark.postgres

PARTITIONED = ("labs", "note_entities", "notes")


def _partitions(w: PostgresWarehouse, table: str) -> dict[str, int]:
    """Partition name -> oid (a new oid means the partition was rebuilt)."""
    rows = w.query(
        "SELECT c.relname, c.oid::bigint AS oid FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(?) ORDER BY 1",
        [f"ehr.{table}"],
    ).to_pylist()
    return {r["relname"]: r["oid"] for r in rows}


def _stray_tables(w: PostgresWarehouse) -> list[str]:
    """Tables of schema ehr that are neither a contract table nor an attached partition."""
    return (
        w.query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'ehr' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND NOT c.relname = ANY(?)",
            [list(WAREHOUSE_TABLES)],
        )
        .column(0)
        .to_pylist()
    )


def _day(w: PostgresWarehouse, table: str, ds: date) -> pa.Table:
    return sort_rows(w.query(f"SELECT * FROM ehr.{table} WHERE ds = ?", [ds]))


def test_postgres_partitions_ddl_partitions_the_large_tables_only() -> None:
    assert sorted(partitioned_ddl()) == list(PARTITIONED)


def test_postgres_partitions_one_per_day_with_adopted_indexes(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    for ds in (DAY1, DAY2):
        w.replace_days({t: make_day(t, ds) for t in PARTITIONED}, ds)
    for table in PARTITIONED:
        assert list(_partitions(w, table)) == [f"{table}_20260101", f"{table}_20260102"], table
        # every index of each partition is attached to the parent's index (built once, adopted by ATTACH)
        # and carries the partition's final name
        rows = w.query(
            "SELECT c.relname, i.inhparent::regclass::text AS parent FROM pg_index x "
            "JOIN pg_class c ON c.oid = x.indexrelid LEFT JOIN pg_inherits i ON i.inhrelid = x.indexrelid "
            "WHERE x.indrelid = to_regclass(?)",
            [f"ehr.{table}_20260102"],
        ).to_pylist()
        parent_indexes = (
            w.query("SELECT count(*) AS n FROM pg_index WHERE indrelid = to_regclass(?)", [f"ehr.{table}"])
            .column("n")[0]
            .as_py()
        )
        assert len(rows) == parent_indexes >= 2, (table, rows)
        assert all(r["parent"] and r["relname"].startswith(f"{table}_20260102_") for r in rows), rows
        assert not any("_load" in r["relname"] for r in rows), rows
    assert _stray_tables(w) == []


def test_postgres_partitions_rerun_rebuilds_only_that_day(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    for ds in (DAY1, DAY2):
        w.replace_days({"labs": make_day("labs", ds), "admissions": make_day("admissions", ds)}, ds)
    before = _partitions(w, "labs")
    second = make_day("labs", DAY1, rows=7, version=2)
    assert w.replace_days({"labs": second, "admissions": make_day("admissions", DAY1, version=2)}, DAY1) == {
        "labs": 7,
        "admissions": 5,
    }
    after = _partitions(w, "labs")
    assert after["labs_20260101"] != before["labs_20260101"]  # swapped for a new table
    assert after["labs_20260102"] == before["labs_20260102"]  # the other day untouched
    assert _day(w, "labs", DAY1).to_pylist() == sort_rows(second).to_pylist()
    assert w.query("SELECT count(*) AS n FROM ehr.labs").column("n")[0].as_py() == 12
    assert w.last_load_timings["copy"] > 0 and w.last_load_timings["index"] > 0
    assert set(w.last_load_timings) == set(pg_module.LOAD_PHASES)


def test_postgres_partitions_empty_day_drops_the_partition(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    w.replace_days({"notes": make_day("notes", DAY1)}, DAY1)
    assert w.replace_days({"notes": make_day("notes", DAY1, rows=0)}, DAY1) == {"notes": 0}
    assert _partitions(w, "notes") == {}
    assert w.query("SELECT count(*) AS n FROM ehr.notes").column("n")[0].as_py() == 0


def test_postgres_partitions_rows_outside_the_range_are_refused(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    w.replace_days({"notes": make_day("notes", DAY1)}, DAY1)
    with pytest.raises(
        WarehouseError, match=r"ehr\.notes: 5 rows have a ds .* outside 2026-01-01\.\.2026-01-01"
    ):
        w.replace_days({"notes": make_day("notes", DAY2)}, DAY1)
    with pytest.raises(WarehouseError, match=r"ehr\.admissions: 5 rows"):
        w.replace_days({"admissions": make_day("admissions", DAY2)}, DAY1)
    assert _day(w, "notes", DAY1).num_rows == 5 and list(_partitions(w, "notes")) == ["notes_20260101"]


def test_postgres_partitions_long_range_commits_per_group_of_days(
    pg_warehouse: PostgresWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_module, "MAX_DAYS_PER_TRANSACTION", 2)
    w = pg_warehouse
    days = [DAY1 + timedelta(days=i) for i in range(5)]
    tables = {
        t: pa.concat_tables([make_day(t, ds, rows=2 + i) for i, ds in enumerate(days)])
        for t in ("note_entities", "admissions")
    }
    assert w.replace_days(tables, days[0], days[-1]) == {"note_entities": 20, "admissions": 20}
    assert len(_partitions(w, "note_entities")) == 5
    counts = {
        (r["table_name"], r["ds"]): r["row_count"]
        for r in w.counts_by_day(["note_entities", "admissions"]).to_pylist()
    }
    assert counts == {(t, ds): 2 + i for t in ("note_entities", "admissions") for i, ds in enumerate(days)}
    # a rerun of the middle of the range with fewer days of data drops the days without rows
    w.replace_days({"note_entities": make_day("note_entities", days[2], rows=1)}, days[1], days[3])
    assert sorted(_partitions(w, "note_entities")) == [
        f"note_entities_{d:%Y%m%d}" for d in (days[0], days[2], days[4])
    ]


def test_postgres_partitions_leftover_staging_table_is_dropped_by_the_next_load(
    pg_warehouse: PostgresWarehouse,
) -> None:
    w = pg_warehouse
    w.replace_days({"note_entities": make_day("note_entities", DAY1)}, DAY1)
    # what a tool that detached a partition by hand, or an older loader, could have left behind
    w.execute_script("CREATE TABLE ehr.note_entities_20260101_load (LIKE ehr.note_entities)")
    assert _stray_tables(w) == ["note_entities_20260101_load"]
    w.replace_days({"note_entities": make_day("note_entities", DAY1, version=2)}, DAY1)
    assert _stray_tables(w) == []
    assert (
        _day(w, "note_entities", DAY1).to_pylist()
        == sort_rows(make_day("note_entities", DAY1, version=2)).to_pylist()
    )


def test_postgres_partitions_swap_waits_for_a_reader_then_retries(
    pg_url: str, pg_warehouse: PostgresWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    monkeypatch.setattr(pg_module, "SWAP_LOCK_TIMEOUT_MS", 150)
    monkeypatch.setattr(pg_module, "SWAP_ATTEMPTS", 30)
    w = pg_warehouse
    w.replace_days({"labs": make_day("labs", DAY1)}, DAY1)
    reader = psycopg.connect(pg_url)
    reader.execute(
        "SELECT count(*) FROM ehr.labs"
    ).fetchone()  # holds ACCESS SHARE until its transaction ends
    release = threading.Timer(1.0, reader.rollback)
    release.start()
    try:
        t0 = time.monotonic()
        w.replace_days({"labs": make_day("labs", DAY1, version=2)}, DAY1)
        waited = time.monotonic() - t0
    finally:
        release.join()
        reader.close()
    assert waited >= 0.9, "the swap did not wait for the reader"
    assert _day(w, "labs", DAY1).to_pylist() == sort_rows(make_day("labs", DAY1, version=2)).to_pylist()


def test_postgres_partitions_swap_gives_up_on_a_reader_that_never_lets_go(
    pg_url: str, pg_warehouse: PostgresWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    monkeypatch.setattr(pg_module, "SWAP_LOCK_TIMEOUT_MS", 100)
    monkeypatch.setattr(pg_module, "SWAP_ATTEMPTS", 2)
    w = pg_warehouse
    w.replace_days({"labs": make_day("labs", DAY1), "patients": make_day("patients", DAY1)}, DAY1)
    before = _day(w, "labs", DAY1)
    with psycopg.connect(pg_url) as reader:
        reader.execute("SELECT count(*) FROM ehr.labs").fetchone()
        with pytest.raises(
            WarehouseError,
            match=r"(?s)swap of day partitions.*rolled back.*readers kept the tables locked through 2 attempts",
        ):
            w.replace_days(
                {
                    "labs": make_day("labs", DAY1, version=2),
                    "patients": make_day("patients", DAY1, version=2),
                },
                DAY1,
            )
        reader.rollback()
    assert _day(w, "labs", DAY1).equals(before)
    assert _day(w, "patients", DAY1).to_pylist() == sort_rows(make_day("patients", DAY1)).to_pylist()
    assert _stray_tables(w) == []


def test_postgres_partitions_concurrent_loads_of_a_day_do_not_mix(
    pg_url: str, pg_warehouse: PostgresWarehouse
) -> None:
    versions = {
        v: {
            "notes": make_day("notes", DAY1, rows=40, version=v),
            "admissions": make_day("admissions", DAY1, version=v),
        }
        for v in (2, 3)
    }
    errors: list[BaseException] = []

    def load(version: int) -> None:
        try:
            with PostgresWarehouse(pg_url) as w:
                w.replace_days(versions[version], DAY1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    notes, admissions = _day(pg_warehouse, "notes", DAY1), _day(pg_warehouse, "admissions", DAY1)
    winner = [v for v in versions if sort_rows(versions[v]["notes"]).to_pylist() == notes.to_pylist()]
    assert len(winner) == 1, "the day holds a mix of two loads"
    assert admissions.to_pylist() == sort_rows(versions[winner[0]]["admissions"]).to_pylist()


def test_postgres_partitions_default_partition_is_refused_with_a_clear_error(
    pg_warehouse: PostgresWarehouse,
) -> None:
    w = pg_warehouse
    w.execute_script("CREATE TABLE ehr.notes_other PARTITION OF ehr.notes DEFAULT")
    try:
        with pytest.raises(WarehouseError, match=r"ehr\.notes has a DEFAULT partition \(notes_other\)"):
            w.replace_days({"notes": make_day("notes", DAY1)}, DAY1)
    finally:
        w.execute_script("DROP TABLE ehr.notes_other")


def test_postgres_partitions_live_column_order_and_extra_columns(pg_url: str) -> None:
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


def test_postgres_partitions_migrate_an_unpartitioned_table_with_its_rows_and_grants(pg_url: str) -> None:
    import psycopg

    with scratch_database("ehr_test_migrate") as url:
        old_rows = pa.concat_tables([make_day("notes", DAY1, rows=4), make_day("notes", DAY2, rows=3)])
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(_old_layout_ddl())
            con.execute(
                "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ehr_test_reader') "
                "THEN CREATE ROLE ehr_test_reader NOLOGIN; END IF; END$$"
            )
            con.execute("GRANT SELECT ON ehr.notes, ehr.v_patient_problems TO ehr_test_reader")
            with con.cursor().copy(f"COPY ehr.notes ({', '.join(old_rows.column_names)}) FROM STDIN") as copy:
                for row in old_rows.to_pylist():
                    copy.write_row(list(row.values()))
        try:
            with PostgresWarehouse(url) as w:  # ensure_schema migrates
                assert sorted(_partitions(w, "notes")) == ["notes_20260101", "notes_20260102"]
                assert (
                    sort_rows(w.query("SELECT * FROM ehr.notes")).to_pylist()
                    == sort_rows(old_rows).to_pylist()
                )
                assert _stray_tables(w) == []
                for relation in ("ehr.notes", "ehr.v_patient_problems"):
                    granted = w.query(
                        "SELECT has_table_privilege('ehr_test_reader', ?, 'SELECT') AS ok", [relation]
                    ).column("ok")[0]
                    assert granted.as_py(), relation
                partitioned = w.query(
                    "SELECT relname FROM pg_class WHERE relkind = 'p' AND relnamespace = 'ehr'::regnamespace "
                    "ORDER BY 1"
                )
                assert partitioned.column(0).to_pylist() == list(PARTITIONED)
                # loads work on the migrated table, and the views were recreated on it
                w.replace_days({"notes": make_day("notes", DAY1, version=2)}, DAY1)
                assert _day(w, "notes", DAY1).num_rows == 5
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
                con.execute("DROP OWNED BY ehr_test_reader")
            with psycopg.connect(pg_url, autocommit=True) as con:
                con.execute("DROP ROLE IF EXISTS ehr_test_reader")
