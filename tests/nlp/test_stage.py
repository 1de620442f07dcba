import datetime as dt

import pyarrow as pa
import pytest

from pipeline.nlp import NOTE_ENTITIES_SCHEMA, AssertionAnnotator, NerStats, annotate_partition
from tests.nlp.conftest import oracle

NOTES_SCHEMA = pa.schema([
    ("note_id", pa.string()), ("subject_id", pa.int64()), ("hadm_id", pa.int64()), ("note_type", pa.string()),
    ("note_seq", pa.int32()), ("charttime", pa.timestamp("us")), ("storetime", pa.timestamp("us")),
    ("text", pa.string()), ("ds", pa.date32()),
])


def notes_batch(texts, first_id=0):
    n = len(texts)
    return pa.RecordBatch.from_pydict(
        {
            "note_id": [f"n{first_id + i}" for i in range(n)],
            "subject_id": list(range(100, 100 + n)),
            "hadm_id": [None if i % 3 == 0 else 1000 + i for i in range(n)],
            "note_type": ["DS"] * n,
            "note_seq": [1] * n,
            "charttime": [dt.datetime(2150, 1, 1)] * n,
            "storetime": [None] * n,
            "text": texts,
            "ds": [dt.date(2150, 1, 1)] * n,
        },
        schema=NOTES_SCHEMA,
    )


@pytest.fixture(scope="module")
def annotator():
    return AssertionAnnotator.create()


def test_stage_bad_notes_are_counted_not_fatal(tiny_model, annotator):
    long_note = ("Patient with chest pain and ✓ fever; denies cough. " * 10_000)[:500_000]
    texts = [
        "", "   \n\t ", "___", "___ ___\n___", None, "Zoë, 45 ans, café ☃ — douleur thoracique 😀. Denies chest pain.",
        "Past Medical History: hypertension.\nFamily History: mother with diabetes.", long_note,
    ]
    stats = NerStats()
    batches = [notes_batch(texts[:4]), notes_batch(texts[4:], first_id=4)]
    out = list(annotate_partition(iter(batches), tiny_model, annotator, run_id="r1", stats=stats))
    table = pa.Table.from_batches(out, schema=NOTE_ENTITIES_SCHEMA)
    assert stats.notes_in == 8 and stats.notes_null == 1 and stats.notes_empty == 4 and stats.notes_long == 1
    assert stats.notes_non_ascii == 2  # the French note and the long one (its check mark)
    assert stats.entities_out == table.num_rows and stats.windows > 0 and stats.tokens > 100_000
    by_id = {f"n{i}": t for i, t in enumerate(texts)}
    for row in table.select(["note_id", "text", "start_char", "end_char"]).to_pylist():
        assert by_id[row["note_id"]][row["start_char"] : row["end_char"]] == row["text"]
    assert set(table.column("note_id").to_pylist()) <= {"n5", "n6", "n7"}


def test_stage_output_schema_and_lineage(tokenizer, annotator):
    """Every batch out has the note_entities contract; every row names its note, model, run and day."""
    from pipeline.contracts import arrow_schema

    texts = ["Past Medical History: hypertension, diabetes.\nHPI: denies chest pain. Took aspirin daily."] * 5
    batches = list(annotate_partition([notes_batch(texts)], oracle(tokenizer, max_length=64), annotator,
                                      run_id="run-42"))
    assert batches and all(b.schema.equals(arrow_schema("note_entities")) for b in batches)
    table = pa.Table.from_batches(batches)
    # the oracle tags 'chest pain' (PROBLEM) and 'aspirin' (TREATMENT): two entities in each of the five notes
    assert table.num_rows == 10
    assert sorted(table.column("text").to_pylist()) == ["aspirin"] * 5 + ["chest pain"] * 5
    assert set(table.column("model_name").to_pylist()) == {"oracle"}
    assert set(table.column("model_version").to_pylist()) == {"1"}
    assert set(table.column("run_id").to_pylist()) == {"run-42"}
    assert set(table.column("ds").to_pylist()) == {dt.date(2150, 1, 1)}
    # lineage: each entity carries its own note's ids (note n0 has no admission)
    notes = {row["note_id"]: row for row in notes_batch(texts).to_pylist()}
    for row in table.to_pylist():
        assert (row["subject_id"], row["hadm_id"]) == (notes[row["note_id"]]["subject_id"],
                                                      notes[row["note_id"]]["hadm_id"])
        assert texts[0][row["start_char"]:row["end_char"]] == row["text"]
        assert row["is_negated"] == (row["text"] == "chest pain")  # "denies chest pain. Took aspirin"
    assert sorted(set(table.column("note_id").to_pylist())) == [f"n{i}" for i in range(5)]


def test_stage_missing_column_is_named(tiny_model, annotator):
    batch = notes_batch(["x"]).drop_columns(["text"])
    with pytest.raises(KeyError, match="E007"):
        list(annotate_partition([batch], tiny_model, annotator, run_id="r"))
