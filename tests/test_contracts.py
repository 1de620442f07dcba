"""The table contracts (schemas/tables/*.yaml) and their one loader, pipeline/contracts.py."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from pipeline.contracts import (
    ARROW_TYPES,
    INPUT_TABLES,
    OUTPUT_TABLES,
    TABLES_DIR,
    ContractError,
    all_contracts,
    arrow_schema,
    check_batch,
    conform,
    contract,
    load_contract,
    raw_arrow_schema,
)

YAML_FILES = sorted(TABLES_DIR.glob("*.yaml"))


def test_contracts_one_file_per_pipeline_table() -> None:
    assert {p.stem for p in YAML_FILES} == set(INPUT_TABLES + OUTPUT_TABLES)
    assert len(INPUT_TABLES + OUTPUT_TABLES) == len(set(INPUT_TABLES + OUTPUT_TABLES))
    kinds = {name: c.kind for name, c in all_contracts().items()}
    assert {n for n, k in kinds.items() if k == "input"} == set(INPUT_TABLES)
    assert {n for n, k in kinds.items() if k == "output"} == set(OUTPUT_TABLES)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.stem)
def test_contracts_every_yaml_is_complete_and_consistent(path: Path) -> None:
    spec = load_contract(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    # the loader keeps every column, in file order, with its type and nullability
    assert [(c.name, c.type, c.nullable) for c in spec.columns] == [
        (c["name"], c["type"], c["nullable"]) for c in raw["columns"]
    ]
    assert spec.description and spec.columns[-1].name in spec.column_names
    assert "ds" in spec.column_names and spec.column("ds").type == "date" and not spec.column("ds").nullable
    for column in spec.columns:
        assert column.type in ARROW_TYPES
    names = set(spec.column_names)
    assert set(spec.primary_key) <= names
    assert all(not spec.column(c).nullable for c in spec.primary_key)
    for dialect in (spec.warehouse.duckdb, spec.warehouse.postgres):
        assert set(dialect.primary_key) <= names
        assert all(set(index) <= names for index in dialect.indexes)
        assert set(dialect.collate) <= names
    schema = arrow_schema(path.stem)
    assert schema.names == spec.column_names
    assert [f.nullable for f in schema] == [c.nullable for c in spec.columns]
    assert all(f.nullable for f in raw_arrow_schema(path.stem))
    assert [f.type for f in raw_arrow_schema(path.stem)] == schema.types


def test_contracts_timestamps_are_microseconds_without_time_zone() -> None:
    timestamps = [
        arrow_schema(name).field(c.name).type
        for name, spec in all_contracts().items()
        for c in spec.columns
        if c.type == "timestamp"
    ]
    assert len(timestamps) >= 10
    assert set(timestamps) == {pa.timestamp("us")}


def test_contracts_free_text_is_declared_for_note_text_and_lab_comments() -> None:
    free = {(name, col) for name, spec in all_contracts().items() for col in spec.free_text_columns}
    assert free == {("notes", "text"), ("labs", "comments")}


def _write(tmp_path: Path, name: str, spec: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _good() -> dict:
    return {
        "name": "visits",
        "description": "test table",
        "kind": "input",
        "primary_key": ["visit_id"],
        "columns": [
            {"name": "visit_id", "type": "int64", "nullable": False},
            {"name": "note", "type": "string", "nullable": True},
            {"name": "seen_at", "type": "timestamp", "nullable": True},
            {"name": "ds", "type": "date", "nullable": False},
        ],
        "warehouse": {"postgres": {"partition_by": "ds", "primary_key": ["visit_id", "ds"], "indexes": [["note"]]}},
    }


def test_contracts_hand_built_yaml_loads(tmp_path: Path) -> None:
    spec = load_contract(_write(tmp_path, "visits", _good()))
    assert spec.arrow_schema == pa.schema(
        [
            pa.field("visit_id", pa.int64(), nullable=False),
            ("note", pa.string()),
            ("seen_at", pa.timestamp("us")),
            pa.field("ds", pa.date32(), nullable=False),
        ]
    )
    assert spec.warehouse.postgres.indexes == (("note",),)
    assert spec.warehouse.duckdb.primary_key == ()


def _break(change: str) -> dict:
    spec = _good()
    cols, pg = spec["columns"], spec["warehouse"]["postgres"]
    if change == "unknown type":
        cols[1]["type"] = "varchar"
    elif change == "key not a column":
        spec["primary_key"] = ["visit_no"]
    elif change == "nullable key":
        spec["primary_key"] = ["note"]
    elif change == "typo in a column key":
        cols[0]["nulable"] = cols[0].pop("nullable")
    elif change == "unknown top-level key":
        spec["primary_keys"] = spec.pop("primary_key")
    elif change == "index not a column":
        pg["indexes"] = [["hadm_id"]]
    elif change == "warehouse key not a column":
        pg["primary_key"] = ["visit_id", "day"]
    elif change == "partitioned by another column":
        pg["partition_by"] = "seen_at"
    elif change == "partition key outside the primary key":
        pg["primary_key"] = ["visit_id"]
    elif change == "duckdb partitioned":
        spec["warehouse"]["duckdb"] = {"partition_by": "ds"}
    elif change == "unknown dialect":
        spec["warehouse"]["oracle"] = {}
    elif change == "collation on a number":
        pg["collate"] = {"visit_id": "C"}
    elif change == "free text on a number":
        cols[0]["free_text"] = True
    elif change == "column twice":
        cols.append(dict(cols[1]))
    elif change == "name differs from file":
        spec["name"] = "visit"
    return spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("unknown type", r"columns\[note\]\.type: Input should be 'int64'"),
        ("key not a column", r"primary_key names \['visit_no'\], which are not columns"),
        ("nullable key", r"primary_key columns \['note'\] are nullable"),
        ("typo in a column key", r"columns\[visit_id\]\.nullable: Field required; columns\[visit_id\]\.nulable: Extra inputs"),
        ("unknown top-level key", r"primary_keys: Extra inputs are not permitted"),
        ("index not a column", r"warehouse\.postgres\.indexes names \['hadm_id'\]"),
        ("warehouse key not a column", r"warehouse\.postgres\.primary_key names \['day'\]"),
        ("partitioned by another column", r"only PostgreSQL tables can be partitioned, and only by ds"),
        ("partition key outside the primary key", r"primary_key must include the partition column 'ds'"),
        ("duckdb partitioned", r"warehouse\.duckdb\.partition_by: only PostgreSQL"),
        ("unknown dialect", r"warehouse\.oracle: Extra inputs are not permitted"),
        ("collation on a number", r"collate: columns \['visit_id'\] are not of type string"),
        ("free text on a number", r"free_text columns \['visit_id'\] are not of type string"),
        ("column twice", r"columns listed twice: \['note'\]"),
        ("name differs from file", r"name 'visit' differs from the file name"),
    ],
)
def test_contracts_malformed_yaml_fails_loudly_naming_the_file(tmp_path: Path, change: str, message: str) -> None:
    path = _write(tmp_path, "visits", _break(change))
    with pytest.raises(ContractError, match=message) as caught:
        load_contract(path)
    assert str(path) in str(caught.value)


def test_contracts_unknown_table_names_the_known_ones() -> None:
    with pytest.raises(ContractError, match=r"no table contract 'visits'.*known tables: admission_risk, admissions"):
        contract("visits")
    with pytest.raises(ContractError, match="no table contract"):
        contract("../expectations/notes")


def test_contracts_conform_orders_and_casts_to_the_contract() -> None:
    table = pa.table(
        {
            "ds": [date(2150, 1, 2)],
            "icd_version": pa.array([9], pa.int64()),
            "icd_code": ["4019"],
            "seq_num": pa.array([1], pa.int64()),
            "hadm_id": [20],
            "subject_id": [10],
            "extra": ["dropped"],
        }
    )
    got = conform(table, "diagnoses")
    assert got.schema == arrow_schema("diagnoses")
    assert got.to_pylist() == [
        {"subject_id": 10, "hadm_id": 20, "seq_num": 1, "icd_code": "4019", "icd_version": 9, "ds": date(2150, 1, 2)}
    ]
    assert conform(table, "diagnoses", raw=True).schema == raw_arrow_schema("diagnoses")
    with pytest.raises(ValueError, match=r"table diagnoses: missing columns \['seq_num'\]"):
        conform(table.drop_columns(["seq_num"]), "diagnoses")


def test_contracts_second_timestamps_keep_their_value_in_microseconds() -> None:
    seconds = pa.array([datetime(2150, 3, 14, 12, 0, 5), None], pa.timestamp("s"))
    table = pa.table({"note_id": ["1-DS-1", "1-DS-2"], "subject_id": [1, 1], "charttime": seconds,
                      "ds": [date(2150, 3, 14)] * 2})
    check = check_batch(table, "notes")
    assert check.table.schema.field("charttime").type == pa.timestamp("us")
    assert check.table.column("charttime").to_pylist() == [datetime(2150, 3, 14, 12, 0, 5), None]
    assert "charttime" not in check.wrong_types  # another unit is the same values, not a wrong type
    assert check.missing == ["hadm_id", "note_type", "note_seq", "storetime", "text"]


def test_contracts_check_batch_reports_wrong_and_uncastable_columns() -> None:
    table = pa.table(
        {
            "subject_id": ["7", "x"],  # text ids: castable for one row only → uncastable
            "gender": pa.array(["F", "M"], pa.large_string()),  # same values, another encoding
            "anchor_age": pa.array([60, 70], pa.int64()),  # castable
            "anchor_year": pa.array([2150, 2151], pa.int32()),
            "anchor_year_group": [None, "2017 - 2019"],
            "dod": pa.array([None, None], pa.date32()),
            "ds": pa.array([date(2150, 1, 1)] * 2),
            "extra": [1, 2],
        }
    )
    check = check_batch(table, "patients")
    assert check.missing == []
    assert check.wrong_types == {
        "subject_id": "subject_id is string, expected int64",
        "anchor_age": "anchor_age is int64, expected int32",
    }
    assert check.uncastable == ["subject_id"]
    assert check.table.column("subject_id").null_count == 2
    assert check.table.schema.field("gender").type == pa.string()
    assert check.table.column("anchor_age").type == pa.int32()
    assert "extra" in check.table.column_names
