import json
import re

import pytest

from pipeline.nlp.assertion import (
    FLAGS,
    RULES_DIR,
    AssertionAnnotator,
    load_context_rules,
    load_section_rules,
)


@pytest.fixture(scope="module")
def annotator():
    return AssertionAnnotator.create()


def flags_of(annotator, text, term, shared_sentences=True):
    import numpy as np

    m = re.search(re.escape(term), text)
    sentence_chars = None
    if shared_sentences:
        sentence_chars = [0] + [m2.end() for m2 in re.finditer(r"[.;:]\s+|\n", text)]
    result = annotator.annotate(text, [m.start()], [m.end()], ["PROBLEM"], np.array(sentence_chars) if sentence_chars else None)
    return {f for f, v in zip(FLAGS, result.flags[0], strict=True) if v}, result.sections[0]


CASES = [
    ("The patient denies chest pain.", "chest pain", {"is_negated"}),
    ("No fever or chills.", "chills", {"is_negated"}),
    ("CT was negative for pulmonary embolism.", "pulmonary embolism", {"is_negated"}),
    ("Pulmonary embolism was ruled out with CTA.", "Pulmonary embolism", {"is_negated"}),
    ("There was initial concern for sepsis.", "sepsis", {"is_uncertain"}),
    ("Cannot rule out pneumonia.", "pneumonia", {"is_uncertain"}),
    ("Probable cellulitis.", "cellulitis", {"is_uncertain"}),
    ("67 y/o man with h/o hypertension who presents with cough.", "hypertension", {"is_historical"}),
    ("She is s/p cholecystectomy.", "cholecystectomy", {"is_historical"}),
    ("Mother with breast cancer.", "breast cancer", {"is_family"}),
    ("Maternal grandmother with diabetes.", "diabetes", {"is_family"}),
    ("No family history of colon cancer.", "colon cancer", {"is_family", "is_negated"}),
    ("Please return to the ED if you develop fever.", "fever", {"is_hypothetical"}),
    ("Seek care immediately for shortness of breath.", "shortness of breath", {"is_hypothetical"}),
    ("Patient reports abdominal pain.", "abdominal pain", set()),
    ("Per family, he has had confusion since Monday.", "confusion", set()),
]


@pytest.mark.parametrize("text,term,want", CASES, ids=[c[1] for c in CASES])
def test_assertion_flags_on_known_sentences(annotator, text, term, want):
    assert flags_of(annotator, text, term)[0] == want


@pytest.mark.parametrize("text,term,want", CASES[:4] + CASES[9:11], ids=lambda x: str(x)[:20])
def test_assertion_pyrush_sentences_agree(annotator, text, term, want):
    assert flags_of(annotator, text, term, shared_sentences=False)[0] == want


def test_assertion_sections_and_section_flags(annotator):
    text = (
        "Past Medical History: diabetes.\nHistory of Present Illness: cough.\n"
        "Family History: father with colon cancer.\nBrief Hospital Course: treated for pneumonia."
    )
    assert flags_of(annotator, text, "diabetes") == ({"is_historical"}, "past_medical_history")
    assert flags_of(annotator, text, "cough") == (set(), "history_of_present_illness")
    assert flags_of(annotator, text, "colon cancer") == ({"is_family"}, "family_history")
    assert flags_of(annotator, text, "pneumonia")[1] == "brief_hospital_course"
    assert flags_of(annotator, "cough without any header", "cough")[1] is None


def test_assertion_scope_stops_at_sentence_end(annotator):
    text = "He denies fever. He has a cough."
    assert flags_of(annotator, text, "cough")[0] == set()


def test_assertion_entities_sharing_a_token(annotator):
    text = "Denies HTN/DM today."
    result = annotator.annotate(text, [7, 11], [10, 13], ["PROBLEM", "PROBLEM"])
    assert result.flags[:, 0].tolist() == [True, True]


@pytest.mark.parametrize("category", ["NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HISTORICAL", "FAMILY",
                                      "HYPOTHETICAL", "TERMINATE", "PSEUDO"])
def test_assertion_rule_file_category_loads(category):
    rules = [r for r in load_context_rules(RULES_DIR / "context_rules.json") if r.category == category]
    assert rules, category
    raw = json.loads((RULES_DIR / "context_rules.json").read_text())["context_rules"]
    assert all(r["direction"] in ("FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO") for r in raw)


def test_assertion_section_titles_file():
    rules = load_section_rules(RULES_DIR / "section_rules.json")
    categories = {r.category for r in rules}
    assert {"past_medical_history", "family_history", "history_of_present_illness"} <= categories
    assert all(r.literal.endswith(":") for r in rules)
