"""eval-phi's metrics: an oracle tagger scores recall 1 with no false positives; a silent one leaves the rules."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from pipeline.bench.phi import evaluate_phi, identifier_free, render_section
from pipeline.synth.phi import clinical_negative_notes, phi_held_out_notes
from pipeline.validate.config import DEFAULT_SUITES_DIR
from pipeline.validate.phi import load_phi_scanner


class Oracle:
    """Returns the gold spans of the held-out notes (looked up by their placeholder-blanked text)."""

    name, version, path = "oracle", "1", Path("oracle")

    def __init__(self, n_notes: int, silent: bool = False) -> None:
        scanner = load_phi_scanner(DEFAULT_SUITES_DIR)
        self.gold = {scanner.blank(n.text): n for n in phi_held_out_notes(n_notes)}
        self.silent = silent

    def __call__(self, texts):
        out = []
        for text in texts:
            note = self.gold.get(text)
            spans = [] if self.silent or note is None else note.entities
            out.append([(e.start_char, e.end_char, e.label, 0.99) for e in spans])
        return out


def test_eval_phi_oracle_and_silent_tagger():
    perfect = evaluate_phi(Oracle(60), n_notes=60, n_deidentified=30, n_clinical=30)
    assert perfect["held_out"]["notes"] == 60 and perfect["held_out"]["identifiers"] > 0
    for group, m in perfect["per_type"].items():
        if m["notes"]:
            assert m["note_recall"] == m["span_recall"] == m["note_flagged"] == 1.0, group
    assert perfect["goals"]["NAME"]["met"] and perfect["false_positives"]["deidentified_flagged"] == 0
    # the clinician-style false-positive set: identifier-free held-out clinical notes, none flagged by the oracle
    assert 0 < perfect["false_positives"]["clinical_notes"] <= 30
    assert perfect["false_positives"]["clinical_notes_flagged"] == 0
    silent = evaluate_phi(Oracle(60, silent=True), n_notes=60, n_deidentified=30, n_clinical=30)
    rules = evaluate_phi(None, n_notes=60, n_deidentified=30, n_clinical=30)
    assert silent["per_type"] == rules["per_type"] and rules["model"] is None
    assert rules["per_type"]["NAME"]["note_recall"] == 0.0 and not rules["goals"]["NAME"]["met"]
    section = render_section(perfect, rules, command="ehr-pipeline eval-phi --notes 60")
    assert section.startswith("## PHI gate\n") and "| NAME | " in section and "ehr-pipeline eval-phi --notes 60" in section
    assert "missed: none" in section and "0 of " in section.split("Clinician-style text: ")[1]


class AlwaysName:
    """Flags the first word of every text as a NAME: every clinical note becomes a false positive."""

    name, version, path = "always", "1", Path("always")

    def __call__(self, texts):
        words = [re.search(r"[A-Za-z]{3,}", text) for text in texts]
        return [[(w.start(), w.end(), "NAME", 0.9)] for w in words]


def test_eval_phi_counts_false_positives_on_clinical_notes():
    result = evaluate_phi(AlwaysName(), n_notes=10, n_deidentified=5, n_clinical=12)
    fp = result["false_positives"]
    assert fp["clinical_notes"] > 0 and fp["clinical_notes_flagged"] == fp["clinical_notes"]
    assert fp["clinical_note_rate"] == 1.0 and fp["clinical_finding_types"] == {"NAME": fp["clinical_notes"]}


def test_hard_negatives_hold_no_identifier():
    scanner = load_phi_scanner(DEFAULT_SUITES_DIR)
    notes = clinical_negative_notes(15)
    assert {n.template_ids[0] for n in notes} == {"clinical-negative"} and all(not n.entities for n in notes)
    kept = identifier_free(notes, scanner)
    assert 0 < len(kept) <= len(notes)
    assert not any(scanner.findings(pa.array([n.text for n in kept], pa.string())))
    # the evaluation's set is the held-out split: none of its texts is a training negative
    held = {n.text for n in clinical_negative_notes(15, split="test", seed=22)}
    assert held.isdisjoint(n.text for n in notes)
