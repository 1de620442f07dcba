"""The SQL source gives the same canonical tables as the CSV folder holding the same data.

The generated folder is loaded into a real SQLite file and into a scratch database on the PostgreSQL
server (typed columns and schemas as in the MIMIC-IV PostgreSQL build; skipped when no server answers).
"""

from __future__ import annotations

import csv
import gzip
import io
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.contracts import INPUT_TABLES, contract
from pipeline.sources import SourceError, extract_range, open_source
from pipeline.sources.base import ExtractResult
from pipeline.sources.files import FolderReader
from pipeline.sources.sql import SqlReader
from tests.services import PG_SERVER_URL, require_pg_server

PG_ADMIN = PG_SERVER_URL

# source file → (schema, table) as in the MIMIC-IV PostgreSQL build
TABLES = {
    "hosp/patients.csv.gz": ("mimiciv_hosp", "patients"),
    "hosp/admissions.csv.gz": ("mimiciv_hosp", "admissions"),
    "hosp/diagnoses_icd.csv.gz": ("mimiciv_hosp", "diagnoses_icd"),
    "hosp/labevents.csv.gz": ("mimiciv_hosp", "labevents"),
    "hosp/prescriptions.csv.gz": ("mimiciv_hosp", "prescriptions"),
    "note/discharge.csv.gz": ("mimiciv_note", "discharge"),
    "hosp/procedures_icd.csv.gz": ("mimiciv_hosp", "procedures_icd"),
    "hosp/d_icd_procedures.csv.gz": ("mimiciv_hosp", "d_icd_procedures"),
    "icu/icustays.csv.gz": ("mimiciv_icu", "icustays"),
}
# column types of the build (PostgreSQL spelling); other columns are text
PG_TYPES = {
    **dict.fromkeys(["subject_id", "hadm_id", "seq_num", "labevent_id", "specimen_id", "itemid", "pharmacy_id",
                     "poe_seq", "anchor_age", "anchor_year", "hospital_expire_flag", "note_seq", "stay_id"], "INTEGER"),
    "icd_version": "SMALLINT",
    **dict.fromkeys(["valuenum", "ref_range_lower", "ref_range_upper", "los"], "DOUBLE PRECISION"),
    **dict.fromkeys(["admittime", "dischtime", "deathtime", "edregtime", "edouttime", "charttime", "storetime",
                     "stoptime", "intime", "outtime"], "TIMESTAMP(0)"),
    "starttime": "TIMESTAMP(3)",  # fractions of a second in the build; the contract keeps whole seconds
    "dod": "DATE",
    "chartdate": "DATE",
    "icd_code": "CHAR(7)",  # blank-padded in the build
}
SQLITE_TYPES = {"INTEGER": "INTEGER", "SMALLINT": "INTEGER", "DOUBLE PRECISION": "REAL", "DATE": "DATE",
                "CHAR(7)": "TEXT"}


def _csv(folder: Path, rel: str) -> tuple[list[str], bytes]:
    data = gzip.decompress((folder / rel).read_bytes())
    header = next(csv.reader(io.StringIO(data.split(b"\n", 1)[0].decode())))
    return header, data


def _rows(data: bytes) -> Iterator[list[str | None]]:
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    next(reader)
    for row in reader:
        yield [value if value != "" else None for value in row]


def load_sqlite(folder: Path, db: Path) -> str:
    con = sqlite3.connect(db)
    for rel, (_, table) in TABLES.items():
        header, data = _csv(folder, rel)
        cols = ", ".join(f'"{c}" {SQLITE_TYPES.get(PG_TYPES.get(c, "TEXT"), "TEXT")}' for c in header)
        con.execute(f'CREATE TABLE "{table}" ({cols})')
        marks = ", ".join("?" * len(header))
        con.executemany(f'INSERT INTO "{table}" VALUES ({marks})', _rows(data))
    con.commit()
    con.close()
    return f"sqlite:///{db}"


def _extract_all(reader, window: tuple[date, date]) -> ExtractResult:
    # wide enough for labs of stays admitted before the first discharge day
    return extract_range(reader, window[0] - timedelta(days=60), window[1] + timedelta(days=60))


def _sorted(table: pa.Table, name: str) -> pa.Table:
    keys = [(k, "ascending") for k in contract(name).primary_key or ("subject_id",)] + [("ds", "ascending")]
    return table.sort_by(keys)


def assert_same_tables(got: ExtractResult, expected: ExtractResult) -> None:
    for name in INPUT_TABLES:
        assert expected.tables[name].num_rows > 0, name
        left, right = _sorted(got.tables[name], name), _sorted(expected.tables[name], name)
        assert left.schema == right.schema, name
        assert left.equals(right), name
    assert got.rejects.num_rows == expected.rejects.num_rows == 0


@pytest.fixture(scope="module")
def folder_result(generated_source) -> ExtractResult:
    folder, first, last = generated_source
    return _extract_all(FolderReader(folder), (first, last))


def test_sql_sqlite_gives_the_folder_tables(tmp_path: Path, generated_source, folder_result) -> None:
    folder, first, last = generated_source
    url = load_sqlite(folder, tmp_path / "mimic.sqlite")
    reader = open_source("sql", url=url)
    assert isinstance(reader, SqlReader) and reader.locate("notes") == (None, "discharge")
    assert_same_tables(_extract_all(reader, (first, last)), folder_result)
    # one day, read in small batches, is the same as well
    small = SqlReader(url, batch_rows=7)
    day = extract_range(small, last)
    for name in INPUT_TABLES:
        assert _sorted(day.tables[name], name).equals(_sorted(extract_range(FolderReader(folder), last).tables[name], name))


def test_sql_sqlite_bad_values_are_set_aside_not_replaced(tmp_path: Path, generated_source) -> None:
    folder, _, last = generated_source
    url = load_sqlite(folder, tmp_path / "mimic.sqlite")
    con = sqlite3.connect(tmp_path / "mimic.sqlite")
    note_id, hadm = con.execute(
        "SELECT note_id, hadm_id FROM discharge WHERE substr(charttime, 1, 10) = ? LIMIT 1", [last.isoformat()]).fetchone()
    # SQLite stores any bytes as TEXT: a note that is not UTF-8, and a spreadsheet-mangled lab time
    con.execute("UPDATE discharge SET text = CAST(X'4e6f746520ff20636166e9' AS TEXT) WHERE note_id = ?", [note_id])
    lab_id = con.execute("SELECT labevent_id FROM labevents WHERE substr(charttime, 1, 10) = ? LIMIT 1",
                         [last.isoformat()]).fetchone()[0]
    con.execute("UPDATE labevents SET charttime = '1/2/26 5:00' WHERE labevent_id = ?", [lab_id])
    con.commit()
    con.close()
    result = extract_range(SqlReader(url), last)
    found = {(r["source_table"], r["record_key"]): r["rule"] for r in result.rejects.to_pylist()}
    assert found[("notes", note_id)] == "invalid_encoding"
    assert found[("labs", str(lab_id))] == "unparseable_timestamp"  # dated by its storetime
    assert note_id not in result.tables["notes"].column("note_id").to_pylist()
    assert hadm in result.tables["admissions"].column("hadm_id").to_pylist()


def test_sql_missing_table_names_where_it_looked(tmp_path: Path) -> None:
    db = tmp_path / "empty.sqlite"
    sqlite3.connect(db).close()
    reader = SqlReader(f"sqlite:///{db}", "somewhere")
    with pytest.raises(SourceError, match=r"table not found \(looked for somewhere\.admissions, "
                                          r"mimiciv_hosp\.admissions, admissions\)"):
        extract_range(reader, date(2026, 1, 1))


def test_sql_bad_schemas_setting_is_named(tmp_path: Path) -> None:
    db = tmp_path / "empty.sqlite"
    sqlite3.connect(db).close()
    with pytest.raises(SourceError, match="EHR_SOURCE_SCHEMAS"):
        SqlReader(f"sqlite:///{db}", "nonsense=x")


# --- PostgreSQL -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_source(generated_source) -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    require_pg_server()
    admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    name = f"ehr_source_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        folder, _, _ = generated_source
        with psycopg.connect(url, autocommit=True) as con:
            con.execute("CREATE SCHEMA mimiciv_hosp; CREATE SCHEMA mimiciv_note; CREATE SCHEMA mimiciv_icu")
            for rel, (schema, table) in TABLES.items():
                header, data = _csv(folder, rel)
                cols = ", ".join(f'"{c}" {PG_TYPES.get(c, "TEXT")}' for c in header)
                con.execute(f'CREATE TABLE {schema}."{table}" ({cols})')
                with con.cursor().copy(f'COPY {schema}."{table}" FROM STDIN WITH (FORMAT csv, HEADER true)') as copy:
                    copy.write(data)
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.postgres
@pytest.mark.parametrize("prefer_adbc", [True, False], ids=["adbc", "sqlalchemy"])
def test_sql_postgres_gives_the_folder_tables(pg_source: str, generated_source, folder_result,
                                              prefer_adbc: bool) -> None:
    _, first, last = generated_source
    reader = SqlReader(pg_source, prefer_adbc=prefer_adbc, batch_rows=500)
    assert reader._adbc is prefer_adbc
    assert reader.locate("labs") == ("mimiciv_hosp", "labevents")
    assert reader.locate("notes") == ("mimiciv_note", "discharge")
    assert_same_tables(_extract_all(reader, (first, last)), folder_result)


@pytest.mark.postgres
def test_sql_postgres_schemas_setting(pg_source: str) -> None:
    import psycopg

    with psycopg.connect(pg_source, autocommit=True) as con:
        con.execute("ALTER SCHEMA mimiciv_hosp RENAME TO site_hosp")
    try:
        with pytest.raises(SourceError, match=r"mimiciv_hosp\.admissions, admissions\)"):
            SqlReader(pg_source).locate("admissions")
        reader = open_source("sql", url=pg_source, schemas="site_hosp")
        assert reader.locate("admissions") == ("site_hosp", "admissions")
        assert reader.locate("notes") == ("mimiciv_note", "discharge")  # the default still applies to the rest
        pinned = SqlReader(pg_source, "notes=site_hosp")
        with pytest.raises(SourceError, match=r"looked for site_hosp\.discharge\)"):
            pinned.locate("notes")
    finally:
        with psycopg.connect(pg_source, autocommit=True) as con:
            con.execute("ALTER SCHEMA site_hosp RENAME TO mimiciv_hosp")
