"""DuckDBWarehouse (the embedded default): the same behaviours the PostgreSQL tests check."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from pipeline.warehouse.base import SchemaMismatchError, WarehouseError, open_warehouse, pinned_warehouse
from pipeline.warehouse.duckdb import DuckDBWarehouse

from .conftest import DAY1, DAY2, make_day, make_runs, sort_rows


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    warehouse = open_warehouse(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    assert isinstance(warehouse, DuckDBWarehouse)
    try:
        yield warehouse
    finally:
        warehouse.close()


def _count(warehouse: DuckDBWarehouse, table: str, ds: date) -> int:
    return warehouse.query(f"SELECT count(*) AS n FROM ehr.{table} WHERE ds = ?", [ds]).column("n")[0].as_py()


def _day(warehouse: DuckDBWarehouse, table: str, ds: date) -> pa.Table:
    return sort_rows(warehouse.query(f"SELECT * FROM ehr.{table} WHERE ds = ?", [ds]))


def test_duckdb_replace_days_is_idempotent_and_keeps_other_days(duck: DuckDBWarehouse) -> None:
    duck.replace_days({"admissions": make_day("admissions", DAY1), "notes": make_day("notes", DAY1)}, DAY1)
    duck.replace_days({"admissions": make_day("admissions", DAY2)}, DAY2)
    second = make_day("admissions", DAY1, version=2)
    for _ in range(2):
        assert duck.replace_days({"admissions": second, "notes": make_day("notes", DAY1)}, DAY1) == {
            "admissions": 5,
            "notes": 5,
        }
    assert _count(duck, "admissions", DAY1) == 5 and _count(duck, "admissions", DAY2) == 5
    assert _day(duck, "admissions", DAY1).cast(second.schema).to_pylist() == sort_rows(second).to_pylist()


def test_duckdb_replace_days_range(duck: DuckDBWarehouse) -> None:
    for ds in (DAY1, DAY2):
        duck.replace_days({"labs": make_day("labs", ds)}, ds)
    assert duck.replace_days({"labs": make_day("labs", DAY1, rows=0)}, DAY1, DAY2) == {"labs": 0}
    assert _count(duck, "labs", DAY1) == _count(duck, "labs", DAY2) == 0


def test_duckdb_rows_outside_the_range_are_refused(duck: DuckDBWarehouse) -> None:
    duck.replace_days({"notes": make_day("notes", DAY1)}, DAY1)
    with pytest.raises(WarehouseError, match=r"ehr\.notes: 5 rows have a ds .* outside 2026-01-01\.\.2026-01-01"):
        duck.replace_days({"notes": make_day("notes", DAY2)}, DAY1)
    # nothing written, nothing deleted: the day keeps its rows
    assert _count(duck, "notes", DAY1) == 5 and _count(duck, "notes", DAY2) == 0


def test_duckdb_record_runs_upserts_on_ds_stage_table(duck: DuckDBWarehouse) -> None:
    duck.record_runs(make_runs(DAY1, status="failed", run_id="run-1"))
    duck.record_runs(make_runs(DAY1, status="success", run_id="run-2"))
    duck.record_runs(make_runs(DAY2, run_id="run-3"))
    rows = duck.query("SELECT ds, run_id, status FROM ehr.pipeline_runs").to_pylist()
    assert len(rows) == 8
    assert {(r["run_id"], r["status"]) for r in rows if r["ds"] == DAY1} == {("run-2", "success")}


def test_duckdb_schema_mismatch_in_data_writes_nothing(duck: DuckDBWarehouse) -> None:
    duck.replace_days({"notes": make_day("notes", DAY1)}, DAY1)
    with pytest.raises(SchemaMismatchError, match=r"ehr\.notes.*missing \['text'\]"):
        duck.replace_days(
            {"patients": make_day("patients", DAY1), "notes": make_day("notes", DAY1).drop_columns(["text"])},
            DAY1,
        )
    with pytest.raises(SchemaMismatchError, match="cannot cast"):
        bad = make_day("notes", DAY1).set_column(0, "note_id", pa.array([[1]] * 5))
        duck.replace_days({"notes": bad}, DAY1)
    assert _count(duck, "notes", DAY1) == 5 and _count(duck, "patients", DAY1) == 0


def test_duckdb_live_table_missing_column_fails_and_writes_nothing(duck: DuckDBWarehouse) -> None:
    duck.replace_days({"notes": make_day("notes", DAY1)}, DAY1)
    duck.execute_script("ALTER TABLE ehr.notes DROP COLUMN note_type")
    with pytest.raises((WarehouseError, duckdb.Error), match="note_type"):
        duck.replace_days({"notes": make_day("notes", DAY1, version=2)}, DAY1)
    assert _count(duck, "notes", DAY1) == 5


class _FailingConnection:
    """Delegates to the DuckDB connection; raises when the INSERT into ``fail_at`` starts."""

    def __init__(self, con: duckdb.DuckDBPyConnection, fail_at: str) -> None:
        self._con, self._fail_at = con, fail_at

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)

    def execute(self, sql: str, *args: object) -> object:
        if sql.startswith(f"INSERT INTO ehr.{self._fail_at} "):
            raise RuntimeError("worker killed between tables")
        return self._con.execute(sql, *args)


def test_duckdb_failure_midway_rolls_back_every_table(duck: DuckDBWarehouse) -> None:
    first = {"patients": make_day("patients", DAY1), "diagnoses": make_day("diagnoses", DAY1)}
    duck.replace_days(first, DAY1)
    before = _day(duck, "patients", DAY1)
    real = duck._con
    duck._con = _FailingConnection(real, "diagnoses")  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="killed"):
        duck.replace_days(
            {
                "patients": make_day("patients", DAY1, version=2),
                "diagnoses": make_day("diagnoses", DAY1, version=2),
            },
            DAY1,
        )
    duck._con = real
    assert _day(duck, "patients", DAY1).equals(before)
    assert _count(duck, "diagnoses", DAY1) == 5


def test_duckdb_select_where_in(duck: DuckDBWarehouse) -> None:
    notes = make_day("notes", DAY1, rows=20)
    duck.replace_days({"notes": notes}, DAY1)
    got = duck.select_where_in(
        "notes", "note_id", notes.column("note_id").slice(0, 4), ["note_id", "charttime"]
    )
    assert sorted(got.column("note_id").to_pylist()) == sorted(notes.column("note_id").to_pylist()[:4])
    assert got.schema == pa.schema([notes.schema.field("note_id"), notes.schema.field("charttime")])


def test_duckdb_reopen_keeps_data(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    with open_warehouse(url) as w:
        w.replace_days({"patients": make_day("patients", DAY1)}, DAY1)
    with open_warehouse(url) as w:
        assert _count(w, "patients", DAY1) == 5  # type: ignore[arg-type]


def test_duckdb_url_query_sets_connection_options(tmp_path: Path) -> None:
    """``duckdb:///path?memory_limit=…&threads=…``: DuckDB options for the connection; the path is the file's."""
    warehouse = open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}?memory_limit=300MB&threads=1")
    try:
        settings = dict(warehouse._con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'threads')").fetchall())
    finally:
        warehouse.close()
    assert settings["threads"] == "1" and settings["memory_limit"].startswith("286")  # 300 MB in MiB
    assert (tmp_path / "w.duckdb").is_file()


def _settings(warehouse: object) -> dict[str, str]:
    con = warehouse._con  # type: ignore[attr-defined]
    return dict(con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'threads')").fetchall())


def test_pinned_warehouse_is_one_connection_with_its_options(tmp_path: Path) -> None:
    """Inside ``pinned_warehouse`` every open of the URL is the same connection (closing it keeps it open), with
    the block's DuckDB options unless the URL sets them; after the block the file opens as before."""
    url = f"duckdb:///{tmp_path / 'w.duckdb'}?threads=2"
    with pinned_warehouse(url, {"memory_limit": "300MB", "threads": "1"}):
        with open_warehouse(url) as first:
            first.replace_days({"patients": make_day("patients", DAY1)}, DAY1)
        with open_warehouse(url) as second:
            assert second._con is first._con  # type: ignore[attr-defined]
            assert _count(second, "patients", DAY1) == 5  # type: ignore[arg-type]
            options = _settings(second)
        with open_warehouse(f"duckdb:///{tmp_path / 'other.duckdb'}") as other:  # another URL: its own connection
            assert other._con is not first._con  # type: ignore[attr-defined]
    assert options["threads"] == "2" and options["memory_limit"].startswith("286")  # the URL's threads win
    with pytest.raises(duckdb.ConnectionException):  # closed with the block
        first._con.execute("SELECT 1")  # type: ignore[attr-defined]
    with open_warehouse(url) as again:
        assert _count(again, "patients", DAY1) == 5  # type: ignore[arg-type]
        assert again._con is not first._con  # type: ignore[attr-defined]


def test_pinned_warehouse_leaves_postgres_urls_alone(tmp_path: Path) -> None:
    with pinned_warehouse("postgresql://nobody@127.0.0.1:1/none"):
        pass  # nothing opened: a PostgreSQL warehouse keeps opening per call


def test_pinned_warehouse_with_a_bad_option_names_the_setting(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    with pytest.raises(WarehouseError, match=r"memory_limit=lots.*EHR_BACKFILL_DUCKDB"), pinned_warehouse(
            url, {"memory_limit": "lots"}):
        pass
