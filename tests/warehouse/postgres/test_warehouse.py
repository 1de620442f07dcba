"""PostgresWarehouse (pipeline/warehouse/postgres/warehouse.py) against a real server (a database of its own per
test run, see tests/warehouse/conftest.py): the schema, replacing days in one transaction, runs and reads."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.warehouse.base import SchemaMismatchError, WarehouseError
from pipeline.warehouse.postgres import PostgresWarehouse
from tests.warehouse.conftest import DAY1, DAY2, make_day, make_runs, sort_rows

from .conftest import count_rows, day_rows

pytestmark = pytest.mark.postgres




def test_postgres_ensure_schema_creates_every_table_and_is_rerunnable(pg_url: str) -> None:
    with PostgresWarehouse(pg_url) as first, PostgresWarehouse(pg_url) as second:
        second.ensure_schema()
        tables = (
            first.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1", ["ehr"]
            )
            .column("table_name")
            .to_pylist()
        )
    for name in ("patients", "admissions", "note_entities", "admission_risk", "pipeline_runs", "quarantine"):
        assert name in tables


# replacing days -----------------------------------------------------------------------------
def test_postgres_replace_days_is_idempotent_and_keeps_other_days(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    w.replace_days({"admissions": make_day("admissions", DAY1), "notes": make_day("notes", DAY1)}, DAY1)
    w.replace_days({"admissions": make_day("admissions", DAY2), "notes": make_day("notes", DAY2)}, DAY2)
    second = make_day("admissions", DAY1, version=2)
    written = w.replace_days({"admissions": second, "notes": make_day("notes", DAY1, version=2)}, DAY1)
    assert written == {"admissions": 5, "notes": 5}
    w.replace_days({"admissions": second, "notes": make_day("notes", DAY1, version=2)}, DAY1)
    assert count_rows(w, "admissions", DAY1) == 5 and count_rows(w, "admissions", DAY2) == 5
    assert day_rows(w, "admissions", DAY1).to_pylist() == sort_rows(second).to_pylist()


def test_postgres_replace_days_range_and_empty_day(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    for ds in (DAY1, DAY2):
        w.replace_days({"labs": make_day("labs", ds)}, ds)
    assert w.replace_days({"labs": make_day("labs", DAY1, rows=0)}, DAY1, DAY2) == {"labs": 0}
    assert count_rows(w, "labs", DAY1) == 0 and count_rows(w, "labs", DAY2) == 0


def test_postgres_replace_days_rolls_back_when_a_later_table_fails(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    w.replace_days({"patients": make_day("patients", DAY1), "admissions": make_day("admissions", DAY1)}, DAY1)
    before = day_rows(w, "patients", DAY1)
    duplicate_keys = pa.concat_tables([make_day("admissions", DAY1, version=2)] * 2)
    with pytest.raises(WarehouseError, match=r"ehr\.admissions.*rolled back"):
        w.replace_days(
            {"patients": make_day("patients", DAY1, version=2), "admissions": duplicate_keys}, DAY1
        )
    assert day_rows(w, "patients", DAY1).equals(before)
    assert count_rows(w, "admissions", DAY1) == 5
    # the connection is usable after the failure
    assert w.replace_days({"patients": make_day("patients", DAY1, version=3)}, DAY1) == {"patients": 5}


class _InterruptingConnection:
    """Delegates to the ADBC connection; the cursor fails when it starts COPYing ``fail_at``.

    Before failing it lets ``spy`` look at the warehouse from another connection, mid-transaction.
    """

    def __init__(self, con, fail_at: str, spy) -> None:  # type: ignore[no-untyped-def]
        self._con, self._fail_at, self._spy = con, fail_at, spy

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._con, name)

    def cursor(self):  # type: ignore[no-untyped-def]
        outer, cur = self, self._con.cursor()

        class _Cursor:
            def __enter__(self):  # type: ignore[no-untyped-def]
                return self

            def __exit__(self, *exc: object) -> None:
                cur.close()

            def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
                return getattr(cur, name)

            def adbc_ingest(self, table_name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
                if table_name == outer._fail_at:
                    outer._spy()
                    raise RuntimeError("worker killed between tables")
                return cur.adbc_ingest(table_name, *args, **kwargs)

        return _Cursor()


def test_postgres_interrupted_load_is_invisible_and_rolled_back(
    pg_url: str, pg_warehouse: PostgresWarehouse
) -> None:
    w = pg_warehouse
    w.replace_days({"patients": make_day("patients", DAY1), "diagnoses": make_day("diagnoses", DAY1)}, DAY1)
    before = day_rows(w, "patients", DAY1)
    seen_mid_load: list[pa.Table] = []

    def reader_mid_load() -> None:
        with PostgresWarehouse(pg_url) as reader:
            seen_mid_load.append(day_rows(reader, "patients", DAY1))

    w._con = _InterruptingConnection(w._con, "diagnoses", reader_mid_load)  # type: ignore[assignment]
    new_day = {
        "patients": make_day("patients", DAY1, version=2),
        "diagnoses": make_day("diagnoses", DAY1, version=2),
    }
    with pytest.raises(RuntimeError, match="killed"):
        w.replace_days(new_day, DAY1)
    w._con = w._con._con  # type: ignore[attr-defined]
    assert seen_mid_load[0].equals(before), "a reader saw a half-loaded day"
    assert day_rows(w, "patients", DAY1).equals(before)
    assert count_rows(w, "diagnoses", DAY1) == 5


def test_postgres_contract_mismatch_in_data_is_refused(pg_warehouse: PostgresWarehouse) -> None:
    with pytest.raises(SchemaMismatchError, match="missing"):
        pg_warehouse.replace_days({"notes": make_day("notes", DAY1).drop_columns(["text"])}, DAY1)


# runs and reads -----------------------------------------------------------------------------
def test_postgres_record_runs_upserts_on_ds_stage_table(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    w.record_runs(make_runs(DAY1, status="failed", run_id="run-1"))
    w.record_runs(make_runs(DAY1, status="success", run_id="run-2"))
    w.record_runs(make_runs(DAY2, status="success", run_id="run-3"))
    rows = w.query(
        "SELECT ds, run_id, status FROM ehr.pipeline_runs ORDER BY ds, stage, table_name"
    ).to_pylist()
    assert len(rows) == 8
    assert {(r["run_id"], r["status"]) for r in rows if r["ds"] == DAY1} == {("run-2", "success")}
    # duplicates inside one batch: the last row wins
    both = pa.concat_tables(
        [make_runs(DAY2, run_id="run-4"), make_runs(DAY2, status="failed", run_id="run-5")]
    )
    w.record_runs(both)
    assert set(
        w.query("SELECT run_id FROM ehr.pipeline_runs WHERE ds = ?", [DAY2]).column(0).to_pylist()
    ) == {"run-5"}


def test_postgres_query_returns_arrow_with_params(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    w.replace_days({"admissions": make_day("admissions", DAY1)}, DAY1)
    result = w.query(
        "SELECT hadm_id, admittime, '?' AS mark FROM ehr.admissions WHERE ds = ? AND hadm_id >= ? ORDER BY hadm_id",
        [DAY1, 9_617_003],
    )
    assert isinstance(result, pa.Table)
    assert result.column("hadm_id").to_pylist() == [9_617_003, 9_617_004]
    assert result.column("mark").to_pylist() == ["?", "?"]
    counts = w.counts_by_day(["admissions"]).to_pylist()
    assert counts == [{"table_name": "admissions", "ds": DAY1, "row_count": 5}]
    with pytest.raises(WarehouseError, match="query failed"):
        w.query("SELECT no_such_column FROM ehr.admissions")
    assert w.query("SELECT 1 AS one").column("one").to_pylist() == [1]


def test_postgres_select_where_in_is_a_semi_join_with_contract_types(pg_warehouse: PostgresWarehouse) -> None:
    w = pg_warehouse
    notes = make_day("notes", DAY1, rows=50)
    w.replace_days({"notes": notes}, DAY1)
    wanted = pa.chunked_array([notes.column("note_id").slice(0, 3).combine_chunks(), pa.array(["missing"])])
    got = w.select_where_in("notes", "note_id", wanted, ["note_id", "subject_id", "charttime"])
    assert got.schema == pa.schema([notes.schema.field(c) for c in ("note_id", "subject_id", "charttime")])
    assert sorted(got.column("note_id").to_pylist()) == sorted(notes.column("note_id").to_pylist()[:3])
    by_subject = w.select_where_in("notes", "subject_id", pa.array(notes.column("subject_id").to_pylist()))
    assert sort_rows(by_subject).equals(sort_rows(notes))
    assert w.select_where_in("notes", "note_id", pa.array([], pa.string())).num_rows == 0
    plan = (
        w.query("EXPLAIN SELECT t.note_id FROM ehr.notes t WHERE t.note_id = ANY(?)", [["a", "b"]])
        .column(0)
        .to_pylist()
    )
    assert plan  # the array parameter is accepted by the planner
