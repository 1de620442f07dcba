"""PHI gate on notes: planted identifiers are caught (entity type only), MIMIC placeholders are not PHI."""

from __future__ import annotations

import logging

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
}
CLINICAL = [
    CLEAN_NOTE,
    "Name: ___ Unit No: ___ [**2151-3-4**] [** Hospital 1234 **] [**Known lastname 4321**] ___",
    "Metoprolol 25 mg PO BID. Cr 1.2 -> 0.9. K 4.1 Na 140. BP 120/80 HR 72 RR 16 SpO2 98% RA at 06:10AM.",
    "___ 06:10AM BLOOD WBC-7.2 RBC-3.45 Hgb-10.2 Hct-31.0 MCV-90 Plt-250 Glucose-105 UreaN-25 Creat-1.2",
    "Admitted 2151-03-05 and discharged 3/14/2151; follow up in 1-2 weeks, INR goal 2-3, I/O 1200/800.",
    "Specimen 123456789 sent. Heparin 5000 units SC TID. Weight 70.5 kg. EF 55%. Room 4 West.",
]


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_phi_planted_identifier_is_quarantined(clean_rows, name):
    text, entity = PLANTED[name]
    clean_rows["notes"].append(note(f"phi-{name}", text=f"{CLEAN_NOTE}\n{text}"))
    outcome = run(clean_rows)
    assert quarantined(outcome, "notes") == {f"phi-{name}": "phi_suspected"}
    detail = outcome.quarantine["detail"][0].as_py()
    assert detail == f"phi_suspected: expect_column_values_to_be_null(_phi_entities) [_phi_entities={entity}]"
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
    assert "[_phi_entities=EMAIL_ADDRESS,MRN,US_SSN]" in detail
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
    assert found == ["US_SSN", None, None]
