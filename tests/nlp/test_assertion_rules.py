"""Assertion rules for the shapes of real clinic notes (schemas/nlp/context_rules.json, section_rules.json), each
checked on sentences written for these tests, with sentence starts found as the NER stage finds them."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.nlp.assertion import FLAGS, AssertionAnnotator
from pipeline.nlp.windows import sentence_starts


@pytest.fixture(scope="module")
def annotator():
    return AssertionAnnotator.create()


def flags(annotator, tokenizer, text: str, terms: list[str]) -> list[set[str]]:
    starts, ends, pos = [], [], 0
    for term in terms:
        i = text.index(term, pos)
        starts.append(i)
        ends.append(i + len(term))
        pos = i + len(term)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    sentence_chars = offsets[sentence_starts(text, offsets), 0]
    result = annotator.annotate(text, starts, ends, ["PROBLEM"] * len(terms), sentence_chars)
    return [{f.removeprefix("is_") for f, v in zip(FLAGS, row, strict=True) if v} for row in result.flags]


CASES = [
    # a colon list: the forward "no" reaches every item (no backward ": no" steals it)
    ("Ext: no clubbing, cyanosis, or edema.", ["clubbing", "cyanosis", "edema"], [{"negated"}] * 3),
    ("Fever: no.", ["Fever"], [{"negated"}]),
    # cues broken by runs of spaces or a hard line break
    ("Review was negative    for dysuria and hematuria.", ["dysuria", "hematuria"], [{"negated"}] * 2),
    ("The workup was negative\nfor anemia.", ["anemia"], [{"negated"}]),
    ("She has no   evidence of   infection.", ["infection"], [{"negated"}]),
    # shorthand cues
    ("Urine -ve for leukocytes.", ["leukocytes"], [{"negated"}]),
    ("Knee films w/o evidence of fracture.", ["fracture"], [{"negated"}]),
    ("Ambulating w/o dizziness.", ["dizziness"], [{"negated"}]),
    # resolved problems
    ("His headache resolved overnight.", ["headache"], [{"negated"}]),
    ("The rash has since resolved.", ["rash"], [{"negated"}]),
    # hypothetical and uncertain, not negated
    ("Duplex ordered to assess for thrombosis.", ["thrombosis"], [{"hypothetical"}]),
    ("Troponins to rule out infarction.", ["infarction"], [{"uncertain"}]),
    ("Admitted to r/o sepsis.", ["sepsis"], [{"uncertain"}]),
    # a negation's scope ends where the positives start
    ("ROS negative for fever and positive for cough and wheezing.", ["fever", "cough", "wheezing"],
     [{"negated"}, set(), set()]),
    ("Denies nausea, endorses heartburn.", ["nausea", "heartburn"], [{"negated"}, set()]),
    # the informant is not the subject
    ("Mom reports poor feeding and fussiness.", ["poor feeding", "fussiness"], [set(), set()]),
    ("Per his wife, he has had insomnia.", ["insomnia"], [set()]),
    ("Mother has lupus.", ["lupus"], [{"family"}]),
]


@pytest.mark.parametrize(("text", "terms", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_assertion_rule(annotator, tokenizer, text, terms, expected):
    assert flags(annotator, tokenizer, text, terms) == expected


def test_assertion_short_exam_header_ends_the_family_history(annotator, tokenizer):
    text = "FH: diabetes, stroke\nPE: Gen: tired appearing. Abd: mild tenderness."
    assert flags(annotator, tokenizer, text, ["diabetes", "stroke", "tenderness"]) == [{"family"}, {"family"}, set()]
    result = annotator.annotate(text, [text.index("tenderness")], [text.index("tenderness") + 10], ["PROBLEM"])
    assert result.sections == ["physical_exam"]


def test_assertion_whitespace_tolerance_applies_to_multiword_rules_only(annotator):
    from medspacy.context import ConTextRule

    from pipeline.nlp.assertion import whitespace_tolerant

    tokenizer = annotator.nlp.tokenizer
    one = ConTextRule("denies", "NEGATED_EXISTENCE", direction="FORWARD")
    assert whitespace_tolerant(one, tokenizer) is one
    two = whitespace_tolerant(ConTextRule("negative for", "NEGATED_EXISTENCE", direction="FORWARD"), tokenizer)
    assert two.pattern == [{"LOWER": "negative"}, {"IS_SPACE": True, "OP": "*"}, {"LOWER": "for"}]
