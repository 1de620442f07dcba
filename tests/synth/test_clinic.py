"""pipeline/synth/clinic.py: shorthand clinic notes with exact gold spans, split by term."""

from __future__ import annotations

from pipeline.synth.clinic import clinic_notes


def test_clinic_notes_spans_labels_and_flags():
    notes = clinic_notes(40, seed=3)
    assert [n.text for n in notes] == [n.text for n in clinic_notes(40, seed=3)]
    ents = [e for n in notes for e in n.entities]
    assert all(n.text[e.start_char:e.end_char] == e.text for n in notes for e in n.entities)
    assert {e.label for e in ents} == {"PROBLEM", "TREATMENT", "TEST"}
    # slash-list items are one PROBLEM each and negated; family and history sections carry their flags
    slash = [e for e in ents if e.template_id.endswith(".slash")]
    assert slash and all(e.is_negated and e.label == "PROBLEM" and "/" not in e.text for e in slash)
    assert all(e.is_family for e in ents if e.section == "fh")
    assert all(e.is_historical for e in ents if e.section in ("pmh", "psh"))
    assert any(e.is_hypothetical for e in ents) and any(e.is_uncertain for e in ents)


def test_clinic_notes_plant_hard_negatives_outside_any_entity():
    for note in clinic_notes(40, seed=4):
        covered = {i for e in note.entities for i in range(e.start_char, e.end_char)}
        for word in ("f/u", " yo ", "y/o", "NKDA", "at home with", "cups of coffee", "Pulm:", "HPI:", "PE:"):
            at = note.text.find(word)
            if at >= 0:
                assert at not in covered, (word, note.text)


def test_clinic_notes_train_and_test_splits_use_different_vocabulary_terms():
    train = {e.term for n in clinic_notes(150, seed=5, split="train") for e in n.entities if e.term.startswith("vocab.")}
    test = {e.term for n in clinic_notes(150, seed=6, split="test") for e in n.entities if e.term.startswith("vocab.")}
    assert train and test and not train & test
