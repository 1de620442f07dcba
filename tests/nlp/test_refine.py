"""pipeline/nlp/refine.py: the rule layer after the model, on sentences written for these tests."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.nlp.refine import RuleLayer, refine_entities


@pytest.fixture(scope="module")
def layer() -> RuleLayer:
    return RuleLayer.load()


def _run(layer, text, spans):
    """spans: (phrase, label) found in order; returns [(text, label)] after the layer."""
    starts, ends, labels, pos = [], [], [], 0
    for phrase, label in spans:
        i = text.index(phrase, pos)
        starts.append(i)
        ends.append(i + len(phrase))
        labels.append(label)
        pos = i + len(phrase)
    out = layer.refine(text, starts, ends, labels, [0.9] * len(labels))
    return [(text[s:e], lb) for s, e, lb in zip(out.starts, out.ends, out.labels, strict=True)]


def test_refine_drops_headers_demographics_fragments_and_hard_negatives(layer):
    text = 'HPI: 64 yo black female seen re f/u of gout. Ate chocolate at home on the couch. " Pulm: CTA.'
    got = _run(layer, text, [("HPI", "PROBLEM"), ("64 yo black female", "PROBLEM"), ("f", "PROBLEM"),
                             ("u", "PROBLEM"), ("gout", "PROBLEM"), ("chocolate", "TREATMENT"), ("home", "TREATMENT"),
                             ("couch", "TREATMENT"), ('"', "PROBLEM"), ("Pulm", "PROBLEM")])
    assert got == [("gout", "PROBLEM")]


def test_refine_keeps_a_header_word_used_as_a_finding(layer):
    text = "She has seasonal allergies.\nAllergies: none."
    assert _run(layer, text, [("allergies", "PROBLEM"), ("Allergies", "PROBLEM")]) == [("allergies", "PROBLEM")]


def test_refine_relabels_drugs_and_procedures_from_the_vocabularies(layer):
    text = "Current meds: Plavix, atorvastatin 40mg daily. PSH: cholecystectomy, colonoscopy 2019."
    got = _run(layer, text, [("Plavix", "PROBLEM"), ("atorvastatin 40mg daily", "PROBLEM"),
                             ("cholecystectomy", "PROBLEM"), ("colonoscopy", "PROBLEM")])
    assert got == [("Plavix", "TREATMENT"), ("atorvastatin", "TREATMENT"), ("cholecystectomy", "TREATMENT"),
                   ("colonoscopy", "TEST")]


def test_refine_a_drug_word_inside_a_disease_keeps_the_model_label(layer):
    text = "History of thyroid cancer."
    assert _run(layer, text, [("thyroid cancer", "PROBLEM")]) == [("thyroid cancer", "PROBLEM")]


def test_refine_adds_vocabulary_drugs_and_surgery_the_model_missed(layer):
    text = "Takes metformin and Zoloft; had a tonsillectomy as a child."
    got = _run(layer, text, [])
    assert got == [("metformin", "TREATMENT"), ("Zoloft", "TREATMENT"), ("tonsillectomy", "TREATMENT")]


def test_refine_splits_symptom_slash_lists_but_not_other_shorthand(layer):
    text = "Pt denies f/c/n/v/d. Heart: RRR, no m/r/g. Will f/u in 2 wks, s/p TKA."
    got = _run(layer, text, [("f/c/n/v/d", "PROBLEM"), ("m/r/g", "PROBLEM")])
    assert got == [("f", "PROBLEM"), ("c", "PROBLEM"), ("n", "PROBLEM"), ("v", "PROBLEM"), ("d", "PROBLEM"),
                   ("m", "PROBLEM"), ("r", "PROBLEM"), ("g", "PROBLEM")]


def test_refine_trims_doses_and_keeps_the_sentence_starts(layer):
    from pipeline.nlp.ner import NoteEntities

    text = "Gave vancomycin 125 mg PO QID."
    s = text.index("vancomycin")
    found = NoteEntities(np.array([s]), np.array([text.index(" QID") + 4]), ["TREATMENT"], np.array([0.8]),
                         sentence_chars=np.array([0]))
    out = refine_entities(text, found, layer)
    assert text[out.starts[0]:out.ends[0]] == "vancomycin" and out.sentence_chars.tolist() == [0]
    assert refine_entities("", found, layer) is found


def test_refine_procedure_head_nouns_and_normal_exam_shorthand(layer):
    text = "PSH: knee replacement, skin biopsy. CV: RRR. Lungs: CTAB."
    got = _run(layer, text, [("knee replacement", "PROBLEM"), ("skin biopsy", "PROBLEM"), ("RRR", "PROBLEM"),
                             ("CTAB", "PROBLEM")])
    assert got == [("knee replacement", "TREATMENT"), ("skin biopsy", "TEST")]
