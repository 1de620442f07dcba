"""ehr.v_note_nlp (sql/views/v_note_nlp.sql): OMOP CDM 5.4 NOTE_NLP over ehr.note_entities, alike on both backends.

Hand-built notes and entities: a MIMIC-IV note (its id maps to subject * 10^6 + kind * 10^5 + seq), a MIMIC-III
note (ROW_ID digits), and a note whose id has neither form (note_id NULL). The snippet of a term next to a date,
a record number and a MIMIC placeholder carries none of them.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.contracts import arrow_schema
from pipeline.warehouse import open_warehouse
from pipeline.warehouse.base import Warehouse

DAY = date(2026, 1, 2)
NER_START = datetime(2026, 1, 3, 2, 15, 0)
TEXT_IV = "Name: [**Known lastname 4711**] MRN 12345678 seen 2151-03-04. Denies chest pain. Mother had diabetes."
TEXT_III = "History: pneumonia in 2019, now resolved. Possible sepsis."
TEXT_OTHER = "Started metformin."

#: (note_id, term, label, flags) — flags among negated, uncertain, historical, family, hypothetical
ENTITIES = [
    ("10000032-DS-1", "chest pain", "PROBLEM", {"negated"}),
    ("10000032-DS-1", "diabetes", "PROBLEM", {"family"}),
    ("10000032-DS-1", "MRN", "TEST", set()),
    ("4711", "pneumonia", "PROBLEM", {"historical"}),
    ("4711", "sepsis", "PROBLEM", {"uncertain"}),
    ("note-x", "metformin", "TREATMENT", {"hypothetical"}),
]
TEXTS = {"10000032-DS-1": TEXT_IV, "4711": TEXT_III, "note-x": TEXT_OTHER}
#: The OMOP-style query: terms that exist for the patient, and all terms per note with their modifiers.
OMOP_QUERY = (
    'SELECT note_nlp_id, note_id, section_concept_id, snippet, "offset", lexical_variant, note_nlp_concept_id, '
    "note_nlp_source_concept_id, nlp_system, nlp_date, nlp_datetime, term_exists, term_temporal, term_modifiers "
    "FROM ehr.v_note_nlp ORDER BY lexical_variant"
)


def _tables() -> dict[str, pa.Table]:
    notes = [{"note_id": nid, "subject_id": 10000032, "hadm_id": 20000001, "note_type": "DS", "note_seq": 1,
              "charttime": datetime(2026, 1, 2), "storetime": None, "text": text, "ds": DAY}
             for nid, text in TEXTS.items()]
    entities = []
    for note_id, term, label, flags in ENTITIES:
        start = TEXTS[note_id].index(term)
        entities.append({
            "note_id": note_id, "subject_id": 10000032, "hadm_id": 20000001, "ds": DAY, "label": label, "text": term,
            "start_char": start, "end_char": start + len(term), "section": None, "score": 0.9,
            **{f"is_{flag}": flag in flags for flag in ("negated", "uncertain", "historical", "family", "hypothetical")},
            "model_name": "clinical-ner", "model_version": "1.2.0", "run_id": "run-ner",
        })
    return {"notes": pa.Table.from_pylist(notes, schema=arrow_schema("notes")),
            "note_entities": pa.Table.from_pylist(entities, schema=arrow_schema("note_entities"))}


def _runs() -> pa.Table:
    return pa.Table.from_pylist([
        {"run_id": "run-ner", "ds": DAY, "stage": f"ner[part-{part}]", "table_name": "note_entities",
         "status": "success", "started_at": NER_START.replace(minute=15 + part), "finished_at": None,
         "rows_in": 1, "rows_out": 1, "rows_quarantined": 0, "detail": None}
        for part in (1, 0)
    ], schema=arrow_schema("pipeline_runs"))


def _omop_rows(warehouse: Warehouse) -> list[dict]:
    warehouse.replace_days(_tables(), DAY)
    warehouse.record_runs(_runs())
    return warehouse.query(OMOP_QUERY).to_pylist()


def _check(rows: list[dict]) -> None:
    by_term = {r["lexical_variant"]: r for r in rows}
    assert set(by_term) == {term for _, term, _, _ in ENTITIES}
    # note ids: MIMIC-IV structure, MIMIC-III ROW_ID, neither (NULL); note_nlp_id = note_id * 10^5 + rank in note
    assert by_term["chest pain"]["note_id"] == 10000032 * 1_000_000 + 1 * 100_000 + 1
    ranks = sorted(by_term[t]["note_nlp_id"] - by_term[t]["note_id"] * 100_000 for t in ("MRN", "chest pain", "diabetes"))
    assert ranks == [1, 2, 3]
    assert by_term["pneumonia"]["note_id"] == 4711 and by_term["pneumonia"]["note_nlp_id"] == 4711 * 100_000 + 1
    assert by_term["metformin"]["note_id"] is None and by_term["metformin"]["note_nlp_id"] is None
    # term_exists 'N' when negated, family, uncertain or hypothetical; historical alone still exists (in the past)
    exists = {t: r["term_exists"] for t, r in by_term.items()}
    assert exists == {"chest pain": "N", "diabetes": "N", "MRN": "Y", "pneumonia": "Y", "sepsis": "N", "metformin": "N"}
    assert by_term["pneumonia"]["term_temporal"] == "past" and by_term["sepsis"]["term_temporal"] == "present"
    assert by_term["chest pain"]["term_modifiers"] == "negated=yes,subject=patient,certainty=certain,conditional=false"
    assert by_term["diabetes"]["term_modifiers"] == "negated=no,subject=family,certainty=certain,conditional=false"
    assert by_term["sepsis"]["term_modifiers"] == "negated=no,subject=patient,certainty=uncertain,conditional=false"
    assert by_term["metformin"]["term_modifiers"] == "negated=no,subject=patient,certainty=certain,conditional=true"
    for row in rows:
        assert row["section_concept_id"] == row["note_nlp_concept_id"] == row["note_nlp_source_concept_id"] == 0
        assert row["nlp_system"] == "clinical-ner 1.2.0"
        assert row["nlp_datetime"] == NER_START and row["nlp_date"] == NER_START.date()  # the run's first NER part
        assert row["lexical_variant"] in row["snippet"] and len(row["snippet"]) <= 250
        assert not any(ch.isdigit() for ch in row["snippet"]) and "[**" not in row["snippet"]
    assert by_term["MRN"]["offset"] == str(TEXT_IV.index("MRN"))
    assert "___ MRN ######## seen ####-##-##. Denies chest pain." in by_term["MRN"]["snippet"]


def test_omop_note_nlp_view_on_duckdb(tmp_path: Path) -> None:
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse:
        _check(_omop_rows(warehouse))


@pytest.mark.postgres
def test_omop_note_nlp_view_gives_the_same_rows_on_duckdb_and_postgres(pg_warehouse: Warehouse, tmp_path: Path) -> None:
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as duck:
        expected = _omop_rows(duck)
    rows = _omop_rows(pg_warehouse)
    _check(rows)
    assert rows == expected
