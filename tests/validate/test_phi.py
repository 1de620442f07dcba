"""PHI gate on notes: planted identifiers are caught (types, offsets, scores; never text), placeholders of every
de-identification style are not PHI, the tagger's findings join the rules' and a failing tagger fails the gate."""

from __future__ import annotations

import logging
import re

import pyarrow as pa
import pytest

from pipeline.validate import ValidationConfig

from .conftest import CLEAN_NOTE, assert_conserved, note, quarantined, run

PLANTED = {
    "ssn": ("Social security 219-09-9999 on file.", "US_SSN"),
    "phone": ("Call daughter at (617) 555-0123 with results.", "PHONE_NUMBER"),
    "email": ("Send summary to jane.doe@example.org please.", "EMAIL_ADDRESS"),
    "mrn": ("MRN: 4481920 transferred.", "MRN"),
    "address": ("Lives alone at 42 Beacon Street in a walk-up.", "STREET_ADDRESS"),
    "date-us": ("Previous admission 03/14/2019 for CHF.", "DATE_REAL_YEAR"),
    "date-iso": ("Echo done 2019-03-14, EF 35%.", "DATE_REAL_YEAR"),
    "age-over-89": ("Pt is a 92 yo woman from home.", "AGE_OVER_89"),
}
CLINICAL = [
    CLEAN_NOTE,
    "Name: ___ Unit No: ___ [**2151-3-4**] [** Hospital 1234 **] [**Known lastname 4321**] ___",
    "Metoprolol 25 mg PO BID. Cr 1.2 -> 0.9. K 4.1 Na 140. BP 120/80 HR 72 RR 16 SpO2 98% RA at 06:10AM.",
    "___ 06:10AM BLOOD WBC-7.2 RBC-3.45 Hgb-10.2 Hct-31.0 MCV-90 Plt-250 Glucose-105 UreaN-25 Creat-1.2",
    "Admitted 2151-03-05 and discharged 3/14/2151; follow up in 1-2 weeks, INR goal 2-3, I/O 1200/800.",
    "Pt is a 67 yo man, 89 y/o mother at home; insulin 90 units; BP 95/60.",
    "Specimen 123456789 sent. Heparin 5000 units SC TID. Weight 70.5 kg. EF 55%. Room 4 West.",
]


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_phi_planted_identifier_is_quarantined(clean_rows, name):
    text, entity = PLANTED[name]
    clean_rows["notes"].append(note(f"phi-{name}", text=f"{CLEAN_NOTE}\n{text}"))
    outcome = run(clean_rows)
    assert quarantined(outcome, "notes") == {f"phi-{name}": "phi_suspected"}
    detail = outcome.quarantine["detail"][0].as_py()
    prefix = "phi_suspected: expect_column_values_to_be_null(_phi_entities) [_phi_entities="
    assert re.fullmatch(re.escape(prefix + entity) + r" x1 \[(\d+)-(\d+) \d\.\d\d\]\]", detail), detail
    start, end = map(int, re.search(r"x1 \[(\d+)-(\d+)", detail).groups())
    assert f"{CLEAN_NOTE}\n{text}"[start:end] in text  # offsets into the note as stored
    assert text not in outcome.quarantine["detail"][0].as_py()
    assert_conserved(outcome)


def test_phi_placeholders_and_clinical_numbers_pass(clean_rows):
    clean_rows["notes"] = [note(f"clin-{i}", text=text) for i, text in enumerate(CLINICAL)]
    outcome = run(clean_rows)
    assert quarantined(outcome, "notes") == {}
    assert outcome.passed["notes"].num_rows == len(CLINICAL)


def test_phi_several_entities_named_never_text(clean_rows, caplog):
    text = "Pt SSN 219-09-9999, email a.b@example.com, MRN 1234567."
    clean_rows["notes"].append(note("multi", text=text))
    with caplog.at_level(logging.DEBUG):
        outcome = run(clean_rows)
    detail = outcome.quarantine["detail"][0].as_py()
    assert re.search(r"\[_phi_entities=EMAIL_ADDRESS x1 \[\S+ \S+\]; MRN x1 \[\S+ \S+\]; US_SSN x1 \[\S+ \S+\]\]", detail)
    assert "219-09-9999" not in caplog.text and "example.com" not in caplog.text
    assert "219-09-9999" not in "".join(outcome.results["expectation"].to_pylist())


def test_phi_gate_off_lets_notes_through(clean_rows):
    clean_rows["notes"].append(note("phi", text="Call (617) 555-0123."))
    config = ValidationConfig(on_batch_failure="warn", phi_gate=False, min_rows_for_share_check=10_000)
    outcome = run(clean_rows, config=config)
    assert quarantined(outcome, "notes") == {}
    assert not any("_phi_entities" in e for e in outcome.results["expectation"].to_pylist())


def test_phi_scanner_direct():
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    scanner = load_phi_scanner(DEFAULT_SUITES_DIR)
    found = scanner.scan(pa.array([PLANTED["ssn"][0], CLINICAL[1], None])).to_pylist()
    assert found == ["US_SSN x1 [16-27 0.50]", None, None]


def test_phi_planted_ssns_are_ones_presidio_accepts():
    """Presidio drops known sample SSNs (123-45-6789 …): the SSNs planted in the tests must not be such samples,
    or the tests would pass for the wrong reason (or fail)."""
    from presidio_analyzer.predefined_recognizers import UsSsnRecognizer

    recognizer = UsSsnRecognizer()
    assert recognizer.analyze("SSN 123-45-6789", entities=["US_SSN"]) == []
    for ssn in ("219-09-9999", "531-62-4489"):
        assert [r.score for r in recognizer.analyze(f"SSN {ssn}", entities=["US_SSN"])] == [0.5], ssn


DEIDENTIFIED = [
    "Mr. [**Known lastname 4321**] seen by Dr. [** Doctor Last Name **] on [**2151-3-4**] at [**Hospital1 18**].",
    "Spoke with daughter ___ at ___; transferred from ___ on ___.",
    "Pt **NAME[AAA, BBB] admitted **DATE[Sep 27 2007] from **INSTITUTION[Z] (**PHONE[555 1212]).",
    "Name: XXXX XXXXXX, SSN XXX-XX-XXXX, call XXX-XXX-XXXX.",
    "Seen by [NAME] at [HOSPITAL] on [DATE]; pager [PHONE].",
    "Patient <PERSON> lives in <LOCATION>, born <DATE_TIME>, email <EMAIL_ADDRESS>.",
    "Admitted 2151-03-05, echo 3/14/2151, follow-up March 3, 2152 and 2200-01-02.",
]


def test_phi_placeholders_of_every_style_are_blanked_in_place():
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    scanner = load_phi_scanner(DEFAULT_SUITES_DIR)
    assert scanner.scan(pa.array(DEIDENTIFIED)).to_pylist() == [None] * len(DEIDENTIFIED)
    for text in DEIDENTIFIED[:6]:
        blanked = scanner.blank(text)
        assert len(blanked) == len(text)
        assert not re.search(r"\[\*\*|___|\*\*[A-Z]+\[|XXX|\[[A-Z]+\]|<[A-Z_]+>", blanked), blanked


class FakeTagger:
    """Finds the first capitalised word after "daughter " and every m/d/yyyy; records what it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[str | None] = []
        self.fail = fail

    def __call__(self, texts):
        if self.fail:
            raise RuntimeError("model broke")
        self.seen += texts
        out = []
        for text in texts:
            found = [(m.start(1), m.end(1), "NAME", 0.91) for m in re.finditer(r"daughter (\w+)", text)]
            found += [(m.start(), m.end(), "DATE", 0.88) for m in re.finditer(r"\d+/\d+/\d{4}", text)]
            out.append(found)
        return out


def test_phi_tagger_findings_join_the_rules(clean_rows):
    text = f"{CLEAN_NOTE}\n[**Known lastname 12**] called; spoke with daughter Quist, echo 3/14/2151, SSN 219-09-9999."
    clean_rows["notes"].append(note("tagged", text=text))
    tagger = FakeTagger()
    config = ValidationConfig(on_batch_failure="warn", min_rows_for_share_check=10_000, phi_tagger=tagger)
    outcome = run(clean_rows, config=config)
    assert quarantined(outcome, "notes") == {"tagged": "phi_suspected"}
    detail = outcome.quarantine["detail"][0].as_py()
    name_at = text.index("Quist")
    assert f"NAME x1 [{name_at}-{name_at + 5} 0.91]" in detail and "US_SSN x1" in detail
    assert "DATE" not in detail  # 3/14/2151: a MIMIC shifted date, not an identifier
    assert "Quist" not in detail and "219-09-9999" not in outcome.quarantine["payload"][0].as_py()
    assert not any("[**" in t for t in tagger.seen if t)  # the tagger saw placeholder-blanked text
    assert any(t and len(t) == len(text) for t in tagger.seen)


def test_phi_tagger_error_fails_the_gate(clean_rows):
    config = ValidationConfig(on_batch_failure="warn", min_rows_for_share_check=10_000, phi_tagger=FakeTagger(True))
    with pytest.raises(RuntimeError, match="model broke"):
        run(clean_rows, config=config)


def test_phi_units_services_and_dates_without_a_date_are_not_identifiers():
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    text = "Admitted to MICU last year, seen by GI and Dr. Quist / 3/14. OSH records. ABG 7.35/45/80."
    kinds = {"MICU": "LOCATION", "GI": "LOCATION", "Quist": "NAME", "last year": "DATE", "/ ": "DATE",
             "OSH": "NAME", "45/80": "DATE"}
    spans = [(text.index(w), text.index(w) + len(w), kind, 0.9) for w, kind in kinds.items()]
    spans.append((text.index("3/14"), text.index("3/14") + 4, "DATE", 0.8))
    found = load_phi_scanner(DEFAULT_SUITES_DIR).scan(pa.array([text]), tagger=lambda texts: [spans]).to_pylist()
    at, date_at = text.index("Quist"), text.index("3/14")
    assert found == [f"DATE x1 [{date_at}-{date_at + 4} 0.80]; NAME x1 [{at}-{at + 5} 0.90]"]


def test_phi_drugs_procedures_and_eponyms_are_not_names():
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    text = ("Positive Murphy's sign. Started Lasix, s/p appendectomy. Foley catheter in place. Greenfield filter. "
            "Dr. Murphy and Dr. White saw pt in Greenfield.")
    tagged = [("Murphy", "NAME", 0), ("Lasix", "NAME", 0), ("appendectomy", "LOCATION", 0), ("Foley", "NAME", 0),
              ("Greenfield", "LOCATION", 0), ("Murphy", "NAME", 1), ("White", "NAME", 0), ("Greenfield", "LOCATION", 1)]

    def at(word: str, nth: int) -> int:
        return text.index(word, text.index(word) + 1) if nth else text.index(word)

    spans = [(at(w, n), at(w, n) + len(w), kind, 0.9) for w, kind, n in tagged]
    found = load_phi_scanner(DEFAULT_SUITES_DIR).findings(pa.array([text]), tagger=lambda texts: [spans])[0]
    # the person after a title, a common name that is also a colour, and the town stay; the clinical words go
    assert [text[f.start:f.end] for f in found] == ["Murphy", "White", "Greenfield"]
    assert found[0].start == at("Murphy", 1) and found[2].start == at("Greenfield", 1)


def test_phi_rules_naming_a_missing_vocabulary_fail_clearly(tmp_path):
    import json

    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import PHI_RULES_FILE, PhiRulesError, load_phi_scanner

    rules = json.loads((DEFAULT_SUITES_DIR / PHI_RULES_FILE).read_text())
    rules["clinical_vocabularies"] = ["no/such/words.txt"]
    (tmp_path / PHI_RULES_FILE).write_text(json.dumps(rules))
    with pytest.raises(PhiRulesError, match=r"no/such/words\.txt not found"):
        load_phi_scanner(tmp_path)


def test_phi_clinical_numbers_are_not_dates():
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    text = ("Strength 4/5 in LUE, 5/5 elsewhere. Pain 6/10. CIWA scores 8-10. INR goal 2-3. F/u in 1-2 weeks, "
            "diurese 1-2 L. Seen 5/5 and 3-6 in clinic.")
    numbers = ["4/5", "5/5", "6/10", "8-10", "2-3", "1-2", "1-2 L"]
    spans = []
    at = 0
    for value in numbers:
        at = text.index(value, at)
        spans.append((at, at + len(value), "DATE", 0.9))
        at += len(value)
    dates = [text.rindex("5/5"), text.index("3-6")]
    spans += [(dates[0], dates[0] + 3, "DATE", 0.9), (dates[1], dates[1] + 3, "DATE", 0.9)]
    found = load_phi_scanner(DEFAULT_SUITES_DIR).findings(pa.array([text]), tagger=lambda texts: [spans])[0]
    # the grades, scores and ranges with a unit go; the two dates of the last sentence stay
    assert [(f.start, text[f.start:f.end]) for f in found] == [(dates[0], "5/5"), (dates[1], "3-6")]


def test_phi_lone_x_after_a_title_is_a_placeholder_and_may_is_a_verb():
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    scanner = load_phi_scanner(DEFAULT_SUITES_DIR)
    assert scanner.blank("Mrs. X is a 66 yo; Mr X has pain.") == " " * 6 + " is a 66 yo; " + " " * 4 + " has pain."
    assert scanner.blank("Dr. Xu and Mr. X. Smith") == "Dr. Xu and Mr. X. Smith"
    text = "He may need surgery. Seen in May. Note detail level (1-5): 3."
    spans = [(text.index("may"), text.index("may") + 3, "DATE", 0.9),
             (text.index("May"), text.index("May") + 3, "DATE", 0.9),
             (text.index("1-5"), text.index("1-5") + 3, "DATE", 0.9)]
    found = scanner.findings(pa.array([text]), tagger=lambda texts: [spans])[0]
    assert [text[f.start:f.end] for f in found] == ["May"]


def test_phi_vital_sign_decades_culture_counts_and_short_numbers_are_not_phones_or_dates():
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    text = "Tele: NSR 70s-80s, SBP 100-120s. BCx 2/2 pending. Pager 5-1234, call x2."
    tagged = [("80s", "PHONE"), ("120s", "PHONE"), ("2/2", "DATE"), ("5-1234", "PHONE"), ("x2", "PHONE")]
    spans = [(text.index(w), text.index(w) + len(w), kind, 0.9) for w, kind in tagged]
    found = load_phi_scanner(DEFAULT_SUITES_DIR).findings(pa.array([text]), tagger=lambda texts: [spans])[0]
    assert [text[f.start:f.end] for f in found if f.source == "tagger"] == ["5-1234"]


def test_phi_names_and_places_need_two_letters():
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    text = "Called and spoke with ___, pt's wife, at 1400. Lives at 12 Elm St in Lynn. PICC placed in R basilic by J."
    tagged = [("1400", "LOCATION"), ("12", "LOCATION"), ("12 Elm St", "LOCATION"), ("Lynn", "LOCATION"),
              ("R", "LOCATION"), ("J.", "NAME")]
    spans = [(text.index(w), text.index(w) + len(w), kind, 0.9) for w, kind in tagged]
    found = load_phi_scanner(DEFAULT_SUITES_DIR).findings(pa.array([text]), tagger=lambda texts: [spans])[0]
    assert [text[f.start:f.end] for f in found if f.source == "tagger"] == ["12 Elm St", "Lynn"]


@pytest.mark.parametrize(("text", "years"), [
    ("Hip fracture '92 per family; CABG in \u201904.", ["'92", "\u201904"]),
    ("Rehab in the '90s. He is 5'10\" and 6' 11 in. Quote 'tis '10' done.", []),
])
def test_phi_year_written_with_an_apostrophe_is_a_date(text, years):
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    found = load_phi_scanner(DEFAULT_SUITES_DIR).findings(pa.array([text]))[0]
    assert [(f.entity, text[f.start:f.end]) for f in found] == [("DATE_REAL_YEAR", y) for y in years]


def test_phi_kinship_words_and_score_names_are_not_names():
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    text = "Nephew ___ is the contact. CIWA scores low. Nephew Lindqvist called; Dtr in later."
    tagged = ["Nephew", "CIWA", "Nephew Lindqvist", "Dtr"]
    spans = [(text.index(w), text.index(w) + len(w), "NAME", 0.9) for w in tagged]
    spans[2] = (text.rindex("Nephew"), text.rindex("Nephew") + len("Nephew Lindqvist"), "NAME", 0.9)
    found = load_phi_scanner(DEFAULT_SUITES_DIR).findings(pa.array([text]), tagger=lambda texts: [spans])[0]
    assert [text[f.start:f.end] for f in found] == ["Nephew Lindqvist"]


def test_phi_form_labels_left_after_blanking_are_not_names():
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    text = "Dr. ___ PG ___. Fax: [PHONE]. DOB ___, Cell ___."
    spans = [(text.index(w), text.index(w) + len(w), "NAME", 0.9) for w in ("PG", "Fax", "DOB", "Cell")]
    assert load_phi_scanner(DEFAULT_SUITES_DIR).findings(pa.array([text]), tagger=lambda texts: [spans]) == [[]]


@pytest.mark.parametrize(("text", "found"), [
    ("Surgery resident pager 17-910. Please reach me at pager 8-0004.", ["pager 17-910", "pager 8-0004"]),
    ("Dr. Oyelaran PG 12940; beeper #32928; page me at 4471", ["PG 12940", "beeper #32928", "page me at 4471"]),
    ("Home phone: 011-555-0123. Daughter's cell: (017) 234-5678. Call back 555-1234",
     ["phone: 011-555-0123", "cell: (017) 234-5678", "Call back 555-1234"]),
    ("Pg 2 of 3; pager 40 mg; page 1200 units; Tel 120/80; fax 2 pages; cell count 1200; phone call at 1400", []),
])
def test_phi_numbers_after_a_pager_or_phone_label_are_found_by_the_rules(text, found):
    """Pager and phone numbers written after their label are found without the tagger, even when they break US
    numbering rules (surrogates and some real exports do); a label before a dose, a count or a time is not."""
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    result = load_phi_scanner(DEFAULT_SUITES_DIR).findings(pa.array([text]))[0] or []
    assert [text[f.start:f.end] for f in result if f.entity in ("PAGER_NUMBER", "PHONE_NUMBER")] == found


def test_phi_rules_with_the_old_must_match_keys_fail_clearly(tmp_path):
    import json

    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import PHI_RULES_FILE, PhiRulesError, load_phi_scanner

    rules = json.loads((DEFAULT_SUITES_DIR / PHI_RULES_FILE).read_text())
    rules["date_must_match"] = r"\d"
    (tmp_path / PHI_RULES_FILE).write_text(json.dumps(rules))
    with pytest.raises(PhiRulesError, match="date_must_match moved"):
        load_phi_scanner(tmp_path)
