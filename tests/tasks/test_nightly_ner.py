"""The ner task (pipeline/tasks/nightly.py) on one validated notes part, with the tiny NER model of tests/nlp."""

from __future__ import annotations

import datetime as dt

import duckdb

from pipeline import lake
from pipeline.config import load_settings
from pipeline.contracts import arrow_schema
from pipeline.tasks import nightly
from tests.tasks.conftest import make_notes


def test_nightly_ner_streams_a_part_into_the_lake(tiny_model_dir, tmp_path):
    """ner on a validated notes part: entities written part-wise, counts recorded, offsets exact."""
    day = dt.date(2150, 1, 1)
    settings = load_settings(workdir=tmp_path, ner_model_path=tiny_model_dir)
    texts = ["Denies chest pain. Started metoprolol for afib.", "", None, "CXR showed pneumonia. " * 300]
    notes = make_notes(texts, day)
    lake.write_partition(settings.lake_dir, "validated", "notes", day, notes, part_rows=100)
    result = nightly.ner(day, 0, run_id="t-1", settings=settings)
    assert result["notes"] == 4
    written = lake.read_partition(settings.lake_dir, "enriched", "note_entities", day, arrow_schema("note_entities"))
    assert written.num_rows == result["entities"]
    by_id = dict(zip(notes.column("note_id").to_pylist(), texts, strict=True))
    for row in written.to_pylist():
        assert by_id[row["note_id"]][row["start_char"]:row["end_char"]] == row["text"]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    rows_in, rows_out = con.execute(
        "SELECT rows_in, rows_out FROM ehr.pipeline_runs WHERE stage = 'ner[part-0]'").fetchone()
    con.close()
    assert (rows_in, rows_out) == (4, written.num_rows)
