"""Quarantine payloads never carry note text: validation and extraction both keep only its sha256 and length."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pyarrow as pa

from pipeline.contracts import free_text_columns, redact_free_text
from pipeline.sources import extract_range, open_source
from tests.sources.conftest import DISCHARGE, FILES, write_folder

from .conftest import CLEAN_NOTE, note, quarantined, run

SSN = "531-62-4489"


def test_redaction_contract_marks_note_text_and_lab_comments():
    assert free_text_columns("notes") == ("text",)
    assert free_text_columns("labs") == ("comments",)
    assert all(free_text_columns(name) == () for name in ("patients", "admissions", "diagnoses", "prescriptions"))


def test_redaction_replaces_text_with_hash_and_length_keeps_other_columns():
    rows = pa.table({"note_id": ["1-DS-1", "2-DS-1", "3-DS-1"], "hadm_id": [100, 200, 300],
                     "text": [f"SSN {SSN}", None, "caf\ufffd"]})
    redacted = redact_free_text("notes", rows).to_pylist()
    assert redacted[0] == {"note_id": "1-DS-1", "hadm_id": 100, "text": {
        "sha256": hashlib.sha256(f"SSN {SSN}".encode()).hexdigest(), "chars": 15}}
    assert redacted[1]["text"] is None  # a missing text stays visibly missing
    assert redacted[2]["text"]["chars"] == 4
    labs = pa.table({"labevent_id": [1], "comments": ["free comment"]})
    assert redact_free_text("labs", labs).to_pylist() == [{"labevent_id": 1, "comments": {
        "sha256": hashlib.sha256(b"free comment").hexdigest(), "chars": 12}}]
    prescriptions = pa.table({"pharmacy_id": [1], "drug": ["Furosemide"]})
    assert redact_free_text("prescriptions", prescriptions).equals(prescriptions)


def test_redaction_phi_note_payload_has_no_text(clean_rows):
    text = f"{CLEAN_NOTE}\nPatient SSN {SSN}, call 617-555-0199."
    clean_rows["notes"].append(note("3-DS-1", 100, text=text))
    outcome = run(clean_rows)
    assert quarantined(outcome, "notes") == {"3-DS-1": "phi_suspected"}
    row = outcome.quarantine.to_pylist()[0]
    assert SSN not in row["payload"] and "617-555-0199" not in row["payload"] and "Chief complaint" not in row["payload"]
    assert SSN not in (row["detail"] or "")
    payload = json.loads(row["payload"])
    assert payload["note_id"] == "3-DS-1" and payload["hadm_id"] == 100 and payload["charttime"]
    assert payload["text"] == {"sha256": hashlib.sha256(text.encode()).hexdigest(), "chars": len(text)}


def test_redaction_rows_set_aside_at_extraction_have_no_text(tmp_path: Path):
    files: dict[str, str | bytes] = dict(FILES)
    files["note/discharge.csv.gz"] = DISCHARGE.encode().replace(b"said", f"SSN {SSN} sa\xffid".encode("latin-1"))
    reader = open_source("mimic4", write_folder(tmp_path / "src", files), None)
    rejects = extract_range(reader, date(2026, 1, 2)).rejects.to_pylist()
    assert [(r["record_key"], r["rule"]) for r in rejects] == [("2-DS-1", "invalid_encoding")]
    payload = json.loads(rejects[0]["payload"])
    assert SSN not in rejects[0]["payload"] and "Brief Hospital Course" not in rejects[0]["payload"]
    assert payload["note_id"] == "2-DS-1" and payload["hadm_id"] == "200"
    assert set(payload["text"]) == {"sha256", "chars"}
