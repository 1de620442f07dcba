"""eval-phi's metrics: an oracle tagger scores recall 1 with no false positives; a silent one leaves the rules."""

from __future__ import annotations

from pathlib import Path

from pipeline.bench.phi import evaluate_phi, render_section
from pipeline.synth.phi import phi_held_out_notes
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
    perfect = evaluate_phi(Oracle(60), n_notes=60, n_deidentified=30)
    assert perfect["held_out"]["notes"] == 60 and perfect["held_out"]["identifiers"] > 0
    for group, m in perfect["per_type"].items():
        if m["notes"]:
            assert m["note_recall"] == m["span_recall"] == m["note_flagged"] == 1.0, group
    assert perfect["goals"]["NAME"]["met"] and perfect["false_positives"]["deidentified_flagged"] == 0
    silent = evaluate_phi(Oracle(60, silent=True), n_notes=60, n_deidentified=30)
    rules = evaluate_phi(None, n_notes=60, n_deidentified=30)
    assert silent["per_type"] == rules["per_type"] and rules["model"] is None
    assert rules["per_type"]["NAME"]["note_recall"] == 0.0 and not rules["goals"]["NAME"]["met"]
    section = render_section(perfect, rules, command="ehr-pipeline eval-phi --notes 60")
    assert section.startswith("## PHI gate\n") and "| NAME | " in section and "ehr-pipeline eval-phi --notes 60" in section
    assert "missed: none" in section
