"""pipeline/nlp/anafora.py: Anafora XML → gold notes (labels per the i2b2 guidelines, flags, CRLF offsets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT
from pipeline.nlp.anafora import AnaforaError, Mapping, read_anafora_dir, read_anafora_note

DEV = REPO_ROOT / "tests" / "fixtures" / "ctakes-dev"


def _entity(ent_id: str, span: str, kind: str, props: str = "") -> str:
    return (f"<entity><id>{ent_id}</id><span>{span}</span><type>{kind}</type>"
            f"<properties>{props}</properties></entity>")


def _write(folder: Path, text: str, entities: list[str], newline: str = "\n") -> Path:
    folder.mkdir(parents=True)
    (folder / folder.name).write_bytes(text.replace("\n", newline).encode())
    xml = f"<?xml version='1.0'?><data><annotations>{''.join(entities)}</annotations></data>"
    (folder / f"{folder.name}.test.completed.xml").write_text(xml)
    return folder


def test_anafora_reads_labels_flags_and_drops_non_concepts(tmp_path):
    text = "Setting: Clinic.\nDetail: 3.\n\nDenies chest pain.\nMom has asthma.\nCT of the head, then appendectomy.\n"
    neg, mom = "9@e", "10@e"
    start = text.index("chest pain")
    body = text.index("Denies")
    _write(tmp_path / "n1", text, [
        _entity(neg, f"{text.index('Denies')},{text.index('Denies') + 6}", "negation_indicator_class"),
        _entity("1@e", f"{start},{start + 10}", "Sign_symptom", f"<negation_indicator>{neg}</negation_indicator>"),
        _entity(mom, f"{text.index('Mom')},{text.index('Mom') + 3}", "Person",
                "<subject_normalization>family_member</subject_normalization>"),
        _entity("2@e", f"{text.index('asthma')},{text.index('asthma') + 6}", "Disease_Disorder",
                f"<subject>{mom}</subject>"),
        _entity("3@e", f"{text.index('CT')},{text.index('CT') + 2};{text.index('head')},{text.index('head') + 4}",
                "Procedure"),
        _entity("4@e", f"{text.index('appendectomy')},{text.index('appendectomy') + 12}", "Procedure",
                "<conditional>x</conditional>"),
        _entity("5@e", f"{text.index('head')},{text.index('head') + 4}", "Anatomical_site"),
    ])
    [note] = read_anafora_dir(tmp_path)
    assert note.header_chars == body and note.text.startswith("Denies")
    got = {e.text: e for e in note.entities}
    assert set(got) == {"chest pain", "asthma", "CT of the head", "appendectomy"}
    assert all(note.text[e.start_char:e.end_char] == e.text for e in note.entities)
    assert got["chest pain"].label == "PROBLEM" and got["chest pain"].is_negated
    assert got["asthma"].is_family and not got["asthma"].is_negated
    assert got["CT of the head"].label == "TEST"  # diagnostic procedure, discontinuous span → its extent
    assert got["appendectomy"].label == "TREATMENT" and got["appendectomy"].is_hypothetical


def test_anafora_spans_annotated_on_a_crlf_copy_are_mapped_back(tmp_path):
    text = "Line one has fever.\nLine two has cough.\nLine three has nausea.\n"
    crlf = text.replace("\n", "\r\n")
    spans = [(crlf.index(w), crlf.index(w) + len(w)) for w in ("fever", "cough", "nausea")]
    _write(tmp_path / "n2", text, [_entity(f"{k}@e", f"{s},{e}", "Sign_symptom") for k, (s, e) in enumerate(spans)])
    note = read_anafora_note(tmp_path / "n2" / "n2", next((tmp_path / "n2").glob("*.xml")), skip_header=False)
    assert note.offset_base == "CRLF"
    assert [e.text for e in note.entities] == ["fever", "cough", "nausea"]


def test_anafora_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(AnaforaError, match="not a folder"):
        read_anafora_dir(tmp_path / "missing")
    with pytest.raises(AnaforaError, match="no annotated notes"):
        read_anafora_dir(tmp_path)
    folder = _write(tmp_path / "n3", "fever", [_entity("1@e", "0,99", "Sign_symptom")])
    with pytest.raises(AnaforaError, match="outside the note"):
        read_anafora_dir(tmp_path)
    (folder / "n3.test.completed.xml").write_text("<data><annotations>")
    with pytest.raises(AnaforaError, match="not well-formed"):
        read_anafora_dir(tmp_path)
    (folder / folder.name).unlink()
    with pytest.raises(AnaforaError, match="without the note text"):
        read_anafora_dir(tmp_path)


def test_anafora_reads_the_vendored_dev_set():
    notes = read_anafora_dir(DEV)
    assert len(notes) == 5 and sum(len(n.entities) for n in notes) == 250
    assert {n.offset_base for n in notes} == {"CRLF", "as stored"}
    for note in notes:
        assert note.header_chars > 0 and not note.text.startswith("Case description")
        assert all(note.text[e.start_char:e.end_char] == e.text for e in note.entities)
    labels = {lb for n in notes for lb in (e.label for e in n.entities)}
    assert labels == {"PROBLEM", "TREATMENT", "TEST"}
    assert sum(e.is_negated for n in notes for e in n.entities) > 50


def test_anafora_mapping_is_data():
    mapping = Mapping.load()
    assert mapping.label_of("Procedure", "upper endoscopy") == "TEST"
    assert mapping.label_of("Procedure", "knee arthroplasty") == "TREATMENT"
    assert mapping.label_of("Anatomical_site", "knee") is None
