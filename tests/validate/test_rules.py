"""Row rules: each test plants exactly the bad rows and checks who is quarantined, with which rule."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from .conftest import (
    ADMIT,
    DISCH,
    DS,
    admission,
    assert_conserved,
    diagnosis,
    known_admissions,
    lab,
    note,
    patient,
    prescription,
    quarantined,
    run,
)


def _only(outcome, expected: dict[str, dict[str, str]]) -> None:
    """The quarantine holds exactly ``expected`` (table -> record_key -> rule); counts add up."""
    tables = {name for name in outcome.counts if quarantined(outcome, name)}
    assert tables == {name for name, rows in expected.items() if rows}
    for name, rows in expected.items():
        assert quarantined(outcome, name) == rows
    assert_conserved(outcome)


def test_rules_clean_batch_passes_everything(clean_rows):
    outcome = run(clean_rows)
    assert outcome.quarantine.num_rows == 0
    assert outcome.batch_failures == []
    assert all(outcome.results["success"].to_pylist())
    for name, rows in clean_rows.items():
        assert outcome.counts[name] == {"rows_in": len(rows), "rows_passed": len(rows), "rows_quarantined": 0}
        assert outcome.passed[name].schema.names[: len(rows[0])] == list(rows[0])


def test_rules_null_and_duplicate_keys_quarantine_all_sharing_rows(clean_rows):
    clean_rows["labs"] += [lab(None), lab(9), lab(9, valuenum=3.0)]
    clean_rows["notes"] += [note("dup"), note("dup"), note(None)]
    # two components of one order (MAIN and BASE) are two rows, not a duplicate; the same component
    # twice with different doses is a conflict
    clean_rows["prescriptions"] += [prescription(5), prescription(5, drug_type="BASE", drug="NS"),
                                    prescription(6), prescription(6, dose_val_rx="80")]
    clean_rows["diagnoses"] += [diagnosis(200, 7), diagnosis(200, 7, "4280"), diagnosis(200, None)]
    outcome = run(clean_rows)
    _only(outcome, {
        "labs": {None: "null_key", "9": "duplicate_key"},
        "notes": {None: "null_key", "dup": "duplicate_key"},
        "prescriptions": {"6|MAIN|Furosemide": "duplicate_key"},
        # one position carrying two codes is the source's grain: both kept
        "diagnoses": {None: "null_key"},
    })
    assert outcome.counts["prescriptions"]["rows_quarantined"] == 2  # both sides of the conflict
    assert outcome.counts["labs"] == {"rows_in": 6, "rows_passed": 3, "rows_quarantined": 3}
    assert outcome.counts["notes"]["rows_quarantined"] == 3  # both duplicates and the null key
    assert outcome.counts["diagnoses"]["rows_quarantined"] == 1


def test_rules_exact_repeat_keeps_the_first_copy(clean_rows):
    clean_rows["prescriptions"] += [prescription(5), prescription(5), prescription(5)]
    clean_rows["diagnoses"] += [diagnosis(200, 7), diagnosis(200, 7)]
    outcome = run(clean_rows)
    _only(outcome, {
        "prescriptions": {"5|MAIN|Furosemide": "duplicate_row"},
        "diagnoses": {"200|7|4019|9": "duplicate_row"},
    })
    assert outcome.counts["prescriptions"] == {"rows_in": 5, "rows_passed": 3, "rows_quarantined": 2}
    assert outcome.counts["diagnoses"] == {"rows_in": 6, "rows_passed": 5, "rows_quarantined": 1}


def test_rules_component_without_type_or_drug_has_no_key(clean_rows):
    clean_rows["prescriptions"] += [prescription(5, drug_type=None), prescription(6, drug=None),
                                    prescription(None)]
    outcome = run(clean_rows)
    rules = outcome.quarantine.filter(pc.equal(outcome.quarantine["source_table"], "prescriptions"))["rule"]
    assert rules.to_pylist() == ["null_key"] * 3


def test_rules_duplicate_patient_and_admission_keys(clean_rows):
    clean_rows["patients"].append(patient(3))
    clean_rows["patients"].append(patient(3, gender="M"))
    clean_rows["admissions"].append(admission(300, 3))
    clean_rows["admissions"] += [admission(400, 1), admission(400, 1)]
    outcome = run(clean_rows)
    q = outcome.quarantine.to_pylist()
    assert sorted((r["source_table"], r["record_key"], r["rule"]) for r in q) == [
        ("admissions", "300", "parent_quarantined"),
        ("admissions", "400", "duplicate_key"),
        ("admissions", "400", "duplicate_key"),
        ("patients", "3", "duplicate_key"),
        ("patients", "3", "duplicate_key"),
    ]
    assert_conserved(outcome)


def test_rules_value_sets(clean_rows):
    clean_rows["patients"] += [patient(3, gender="U"), patient(4, gender=None)]
    clean_rows["admissions"] += [
        admission(300, 1, admission_type="NEWBORN"),  # MIMIC-III vocabulary is accepted
        admission(301, 1, admission_type="WALK IN"),
    ]
    clean_rows["diagnoses"] += [diagnosis(100, 9, "4019", 11)]
    outcome = run(clean_rows)
    _only(outcome, {
        "patients": {"3": "invalid_gender", "4": "missing_required_value"},
        "admissions": {"301": "invalid_admission_type"},
        "diagnoses": {"100|9|4019|11": "invalid_icd_version"},
    })


def test_rules_ranges(clean_rows):
    clean_rows["patients"] += [patient(3, anchor_age=-1), patient(4, anchor_age=92), patient(5, anchor_age=0)]
    clean_rows["labs"] += [lab(7, valuenum=math.nan), lab(8, valuenum=math.inf), lab(9, valuenum=-math.inf),
                           lab(10, valuenum=None), lab(11, valuenum=-3.5)]
    outcome = run(clean_rows)
    _only(outcome, {
        "patients": {"3": "anchor_age_out_of_range", "4": "anchor_age_out_of_range"},
        "labs": {"7": "non_finite_value", "8": "non_finite_value", "9": "non_finite_value"},
    })
    payload = json.loads(outcome.quarantine.filter(pa.compute.equal(outcome.quarantine["record_key"], "7"))
                         ["payload"][0].as_py())
    assert payload["valuenum"] == "nan" and payload["charttime"] == "2150-03-14T06:10:00"


def test_rules_discharge_before_admission_lists_los_in_detail(clean_rows):
    clean_rows["admissions"].append(admission(300, 1, admittime=DISCH, dischtime=ADMIT))
    clean_rows["admissions"].append(admission(301, 1, admittime=ADMIT, dischtime=ADMIT))  # zero LOS is fine
    outcome = run(clean_rows)
    _only(outcome, {"admissions": {"300": "discharge_before_admission"}})
    detail = outcome.quarantine["detail"][0].as_py()
    assert detail.startswith("discharge_before_admission: expect_column_pair_values_a_to_be_greater_than_b")
    assert "negative_length_of_stay" in detail


def test_rules_deathtime_within_admission(clean_rows):
    clean_rows["admissions"] += [
        admission(300, 1, deathtime=ADMIT - timedelta(hours=1)),
        admission(301, 1, deathtime=DISCH + timedelta(hours=25)),
        admission(302, 1, deathtime=DISCH + timedelta(hours=2)),  # within tolerance
        admission(303, 1, deathtime=DISCH),
    ]
    outcome = run(clean_rows)
    _only(outcome, {"admissions": {"300": "death_outside_admission", "301": "death_outside_admission"}})


def test_rules_note_charttime_window(clean_rows):
    clean_rows["notes"] += [
        note("early", 100, charttime=ADMIT - timedelta(days=1, minutes=1)),
        note("late", 100, charttime=DISCH + timedelta(days=7, minutes=1)),
        note("edge-early", 100, charttime=ADMIT - timedelta(days=1)),
        note("edge-late", 100, charttime=DISCH + timedelta(days=7)),
        note("known-ok", 900, charttime=datetime(2150, 3, 1)),
        note("known-late", 900, charttime=datetime(2150, 3, 14)),
    ]
    known = known_admissions([{"hadm_id": 900, "subject_id": 1, "admittime": datetime(2150, 2, 27),
                               "dischtime": datetime(2150, 3, 2)}])
    outcome = run(clean_rows, known_admissions=known)
    _only(outcome, {"notes": {"early": "note_outside_admission_window", "late": "note_outside_admission_window",
                              "known-late": "note_outside_admission_window"}})


def test_rules_references(clean_rows):
    clean_rows["admissions"] += [admission(300, 77), admission(301, 55)]
    clean_rows["diagnoses"].append(diagnosis(999, 1))
    clean_rows["labs"] += [lab(7, 999), lab(8, 900)]
    clean_rows["prescriptions"].append(prescription(7, 999))
    clean_rows["notes"].append(note("x", 999))
    known = known_admissions([{"hadm_id": 900, "subject_id": 1, "admittime": ADMIT, "dischtime": DISCH}])
    outcome = run(clean_rows, known_admissions=known, known_subject_ids=pa.array([55], pa.int64()))
    _only(outcome, {
        "admissions": {"300": "unknown_subject"},
        "diagnoses": {"999|1|4019|9": "unknown_admission"},
        "labs": {"7": "unknown_admission"},
        "prescriptions": {"7|MAIN|Furosemide": "unknown_admission"},
        "notes": {"x": "unknown_admission"},
    })


def test_rules_icd_code_format_by_version(clean_rows):
    clean_rows["diagnoses"] += [
        diagnosis(100, 10, "E8497", 9), diagnosis(100, 11, "V10", 9), diagnosis(100, 12, "I10", 9),
        diagnosis(100, 13, "401.9", 9), diagnosis(200, 10, "Z8546", 10), diagnosis(200, 11, "4019", 10),
        diagnosis(200, 12, "i10", 10),
    ]
    outcome = run(clean_rows)
    _only(outcome, {"diagnoses": {"100|12|I10|9": "invalid_icd_code", "100|13|401.9|9": "invalid_icd_code",
                                  "200|11|4019|10": "invalid_icd_code", "200|12|i10|10": "invalid_icd_code"}})


def test_rules_note_text_present_and_bounded(clean_rows):
    from pipeline.validate import ValidationConfig

    clean_rows["notes"] += [note("null", text=None), note("blank", text=" \n\t "), note("empty", text=""),
                            note("long", text="Cr 1.2. " * 40)]
    config = ValidationConfig(on_batch_failure="warn", note_max_chars=300, min_rows_for_share_check=10_000)
    outcome = run(clean_rows, config=config)
    _only(outcome, {"notes": {"null": "missing_note_text", "blank": "blank_note_text", "empty": "blank_note_text",
                              "long": "note_too_long"}})
    assert "Cr 1.2" not in "".join(outcome.quarantine["detail"].to_pylist())


def test_rules_wrong_ds(clean_rows):
    clean_rows["labs"].append(lab(7, ds=DS + timedelta(days=1)))
    outcome = run(clean_rows)
    _only(outcome, {"labs": {"7": "wrong_ds"}})


def test_rules_first_rule_wins_and_others_in_detail(clean_rows):
    clean_rows["patients"].append(patient(3, gender="X", anchor_age=120))
    outcome = run(clean_rows)
    _only(outcome, {"patients": {"3": "invalid_gender"}})
    detail = outcome.quarantine["detail"][0].as_py()
    assert detail.split("; ")[0].startswith("invalid_gender:")
    assert "anchor_age_out_of_range: expect_column_values_to_be_between(anchor_age)" in detail
