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


def test_nightly_ner_loads_the_model_once_per_process_until_its_files_change(tiny_model_dir, tmp_path, monkeypatch):
    """A backfill maps NER over many day parts in one process: the model is loaded once, and again (with its
    checksum checked) when a file of the model changes."""
    import shutil

    from pipeline.nlp import NerModel

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    settings = load_settings(workdir=tmp_path, ner_model_path=model_dir)
    loads = []
    real_load = NerModel.load.__func__

    def counting_load(cls, *args, **kwargs):
        loads.append(args[0])
        return real_load(cls, *args, **kwargs)

    monkeypatch.setattr(NerModel, "load", classmethod(counting_load))
    nightly._NER_LOADED.clear()
    days = [dt.date(2150, 1, 1), dt.date(2150, 1, 2)]
    for day in days:
        lake.write_partition(settings.lake_dir, "validated", "notes", day, make_notes(["Denies chest pain."], day),
                             part_rows=100)
        nightly.ner(day, 0, run_id=f"t-{day}", settings=settings)
    assert len(loads) == 1
    config = model_dir / "config.json"
    config.write_text(config.read_text(encoding="utf-8") + "\n", encoding="utf-8")  # a changed file
    nightly.ner(days[0], 0, run_id="t-again", settings=settings)
    assert len(loads) == 2
    nightly._NER_LOADED.clear()
