"""Day partitions of the large PostgreSQL tables: built aside, swapped in, never half visible.

labs, notes and note_entities are LIST-partitioned by ds (their contracts' warehouse.postgres block);
replace_days builds a new partition per day in its transaction and swaps it for the old one (pipeline/warehouse/postgres/partitions.py).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pyarrow as pa
import pytest

from pipeline.warehouse.base import WarehouseError
from pipeline.warehouse.postgres import PostgresWarehouse, partitions, warehouse
from tests.warehouse.conftest import DAY1, DAY2, make_day, sort_rows

from .conftest import PARTITIONED, day_rows, partitions_of, stray_tables

pytestmark = pytest.mark.postgres


def test_postgres_partitions_one_per_day_with_adopted_indexes(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    for ds in (DAY1, DAY2):
        w.replace_days({t: make_day(t, ds) for t in PARTITIONED}, ds)
    for table in PARTITIONED:
        assert list(partitions_of(w, table)) == [f"{table}_20260101", f"{table}_20260102"], table
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
    assert stray_tables(w) == []


def test_postgres_partitions_rerun_rebuilds_only_that_day(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    for ds in (DAY1, DAY2):
        w.replace_days({"labs": make_day("labs", ds), "admissions": make_day("admissions", ds)}, ds)
    before = partitions_of(w, "labs")
    second = make_day("labs", DAY1, rows=7, version=2)
    assert w.replace_days({"labs": second, "admissions": make_day("admissions", DAY1, version=2)}, DAY1) == {
        "labs": 7,
        "admissions": 5,
    }
    after = partitions_of(w, "labs")
    assert after["labs_20260101"] != before["labs_20260101"]  # swapped for a new table
    assert after["labs_20260102"] == before["labs_20260102"]  # the other day untouched
    assert day_rows(w, "labs", DAY1).to_pylist() == sort_rows(second).to_pylist()
    assert w.query("SELECT count(*) AS n FROM ehr.labs").column("n")[0].as_py() == 12
    assert w.last_load_timings["copy"] > 0 and w.last_load_timings["index"] > 0
    assert set(w.last_load_timings) == set(partitions.LOAD_PHASES)


def test_postgres_partitions_empty_day_drops_the_partition(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    w.replace_days({"notes": make_day("notes", DAY1)}, DAY1)
    assert w.replace_days({"notes": make_day("notes", DAY1, rows=0)}, DAY1) == {"notes": 0}
    assert partitions_of(w, "notes") == {}
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
    assert day_rows(w, "notes", DAY1).num_rows == 5 and list(partitions_of(w, "notes")) == ["notes_20260101"]


def test_postgres_partitions_long_range_commits_per_group_of_days(
    pg_warehouse: PostgresWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warehouse, "MAX_DAYS_PER_TRANSACTION", 2)
    w = pg_warehouse
    days = [DAY1 + timedelta(days=i) for i in range(5)]
    tables = {
        t: pa.concat_tables([make_day(t, ds, rows=2 + i) for i, ds in enumerate(days)])
        for t in ("note_entities", "admissions")
    }
    assert w.replace_days(tables, days[0], days[-1]) == {"note_entities": 20, "admissions": 20}
    assert len(partitions_of(w, "note_entities")) == 5
    counts = {
        (r["table_name"], r["ds"]): r["row_count"]
        for r in w.counts_by_day(["note_entities", "admissions"]).to_pylist()
    }
    assert counts == {(t, ds): 2 + i for t in ("note_entities", "admissions") for i, ds in enumerate(days)}
    # a rerun of the middle of the range with fewer days of data drops the days without rows
    w.replace_days({"note_entities": make_day("note_entities", days[2], rows=1)}, days[1], days[3])
    assert sorted(partitions_of(w, "note_entities")) == [
        f"note_entities_{d:%Y%m%d}" for d in (days[0], days[2], days[4])
    ]


def test_postgres_partitions_leftover_staging_table_is_dropped_by_the_next_load(
    pg_warehouse: PostgresWarehouse,
) -> None:
    w = pg_warehouse
    w.replace_days({"note_entities": make_day("note_entities", DAY1)}, DAY1)
    # what a tool that detached a partition by hand, or an older loader, could have left behind
    w.execute_script("CREATE TABLE ehr.note_entities_20260101_load (LIKE ehr.note_entities)")
    assert stray_tables(w) == ["note_entities_20260101_load"]
    w.replace_days({"note_entities": make_day("note_entities", DAY1, version=2)}, DAY1)
    assert stray_tables(w) == []
    assert (
        day_rows(w, "note_entities", DAY1).to_pylist()
        == sort_rows(make_day("note_entities", DAY1, version=2)).to_pylist()
    )


def test_postgres_partitions_swap_waits_for_a_reader_then_retries(
    pg_url: str, pg_warehouse: PostgresWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    monkeypatch.setattr(partitions, "SWAP_LOCK_TIMEOUT_MS", 150)
    monkeypatch.setattr(partitions, "SWAP_ATTEMPTS", 30)
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
    assert day_rows(w, "labs", DAY1).to_pylist() == sort_rows(make_day("labs", DAY1, version=2)).to_pylist()


def test_postgres_partitions_swap_gives_up_on_a_reader_that_never_lets_go(
    pg_url: str, pg_warehouse: PostgresWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    monkeypatch.setattr(partitions, "SWAP_LOCK_TIMEOUT_MS", 100)
    monkeypatch.setattr(partitions, "SWAP_ATTEMPTS", 2)
    w = pg_warehouse
    w.replace_days({"labs": make_day("labs", DAY1), "patients": make_day("patients", DAY1)}, DAY1)
    before = day_rows(w, "labs", DAY1)
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
    assert day_rows(w, "labs", DAY1).equals(before)
    assert day_rows(w, "patients", DAY1).to_pylist() == sort_rows(make_day("patients", DAY1)).to_pylist()
    assert stray_tables(w) == []


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
    notes, admissions = day_rows(pg_warehouse, "notes", DAY1), day_rows(pg_warehouse, "admissions", DAY1)
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


