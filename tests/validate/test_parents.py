"""Dependents follow their parent: rows of a quarantined patient/admission are parent_quarantined."""

from __future__ import annotations

import pyarrow as pa

from pipeline.validate import QUARANTINE_SCHEMA

from .conftest import DS, RUN_ID, admission, assert_conserved, lab, note, patient, quarantined, run


def test_parents_admission_quarantine_cascades_to_dependents(clean_rows):
    clean_rows["admissions"][0] = admission(100, 1, admission_type="BOGUS")
    outcome = run(clean_rows)
    assert quarantined(outcome, "admissions") == {"100": "invalid_admission_type"}
    assert quarantined(outcome, "diagnoses") == {"100|1|4019|9": "parent_quarantined", "100|2|V1582|9": "parent_quarantined"}
    assert quarantined(outcome, "labs") == {"1": "parent_quarantined"}
    assert quarantined(outcome, "prescriptions") == {"1|MAIN|Furosemide": "parent_quarantined"}
    assert quarantined(outcome, "notes") == {"1-DS-1": "parent_quarantined"}
    assert quarantined(outcome, "patients") == {}
    details = outcome.quarantine.filter(pa.compute.equal(outcome.quarantine["source_table"], "labs"))["detail"]
    assert details[0].as_py() == "parent_quarantined: parent admissions hadm_id=100 rule=invalid_admission_type"
    assert outcome.passed["labs"]["labevent_id"].to_pylist() == [2, 3]
    assert_conserved(outcome)


def test_parents_patient_quarantine_cascades_through_admissions(clean_rows):
    clean_rows["patients"][1] = patient(2, anchor_age=140)
    outcome = run(clean_rows)
    assert quarantined(outcome, "patients") == {"2": "anchor_age_out_of_range"}
    assert quarantined(outcome, "admissions") == {"200": "parent_quarantined"}
    assert quarantined(outcome, "labs") == {"2": "parent_quarantined"}
    assert quarantined(outcome, "notes") == {"2-DS-1": "parent_quarantined"}
    assert quarantined(outcome, "diagnoses") == {"200|1|I10|10": "parent_quarantined", "200|2|E1122|10": "parent_quarantined"}
    adm = outcome.quarantine.filter(pa.compute.equal(outcome.quarantine["source_table"], "admissions"))
    assert adm["detail"][0].as_py() == "parent_quarantined: parent patients subject_id=2 rule=anchor_age_out_of_range"
    labs = outcome.quarantine.filter(pa.compute.equal(outcome.quarantine["source_table"], "labs"))
    lab_detail = labs["detail"]
    assert "parent admissions hadm_id=200 rule=parent_quarantined" in lab_detail[0].as_py()
    assert "parent patients subject_id=2 rule=anchor_age_out_of_range" in lab_detail[0].as_py()
    assert_conserved(outcome)


def test_parents_pre_quarantined_rows_count_and_cascade(clean_rows):
    pre = pa.Table.from_pylist([
        {"ds": DS, "source_table": "admissions", "record_key": "300", "rule": "unparseable_timestamp",
         "detail": "admittime", "payload": "{}", "run_id": RUN_ID},
        {"ds": DS, "source_table": "labs", "record_key": None, "rule": "missing_required_value",
         "detail": "labevent_id", "payload": "{}", "run_id": RUN_ID},
    ], schema=QUARANTINE_SCHEMA)
    clean_rows["labs"] += [lab(7, 300), lab(8, None, subject_id=2)]
    clean_rows["notes"].append(note("n300", 300))
    outcome = run(clean_rows, pre_quarantine=pre)
    assert outcome.counts["admissions"] == {"rows_in": 3, "rows_passed": 2, "rows_quarantined": 1}
    assert outcome.counts["labs"] == {"rows_in": 6, "rows_passed": 4, "rows_quarantined": 2}
    assert quarantined(outcome, "labs") == {None: "missing_required_value", "7": "parent_quarantined"}
    assert quarantined(outcome, "notes") == {"n300": "parent_quarantined"}
    detail = outcome.quarantine.filter(pa.compute.equal(outcome.quarantine["record_key"], "n300"))["detail"]
    assert detail[0].as_py() == "parent_quarantined: parent admissions hadm_id=300 rule=unparseable_timestamp"
    assert outcome.quarantine.num_rows == 4
    assert_conserved(outcome)


def test_parents_outpatient_lab_of_quarantined_patient_follows(clean_rows):
    clean_rows["patients"][0] = patient(1, gender="?")
    clean_rows["admissions"] = [clean_rows["admissions"][1]]
    clean_rows["diagnoses"] = clean_rows["diagnoses"][2:]
    clean_rows["prescriptions"] = clean_rows["prescriptions"][1:]
    clean_rows["notes"] = clean_rows["notes"][1:]
    clean_rows["labs"] = [lab(2, 200, subject_id=2), lab(3, None, subject_id=1)]
    outcome = run(clean_rows)
    assert quarantined(outcome, "labs") == {"3": "parent_quarantined"}
    assert_conserved(outcome)
