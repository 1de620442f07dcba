"""PHI gate: train the tagger on generated notes, evaluate it on held-out ones, measure its cost against NER.

``train_phi_model`` makes the training notes (``pipeline.synth.phi``, "train" split), blanks their placeholders
the way the gate does and fits ``pipeline.nlp.phi``. ``evaluate_phi`` runs the gate exactly as validation runs it
(``PhiScanner.findings`` with the tagger) on the held-out split (templates and surrogate values training never
saw) and on placeholder-only text, and ``phi_cost`` times it against the NER model on the same notes.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.nlp.phi import (
    DEFAULT_LAYERS,
    DEFAULT_STEPS,
    DEFAULT_THRESHOLD,
    PhiTagger,
    load_phi_tagger,
    train_phi,
)
from pipeline.synth.phi import (
    EVAL_SEED,
    PHI_TYPES,
    PhiNote,
    clinical_negative_notes,
    deidentified_sentences,
    phi_held_out_notes,
    phi_training_notes,
)
from pipeline.validate.config import DEFAULT_SUITES_DIR
from pipeline.validate.phi import PhiScanner, load_phi_scanner

DEFAULT_TRAIN_NOTES = 9000
DEFAULT_EVAL_NOTES = 1000
DEFAULT_DEID_TEXTS = 2000
# Identifier-free generated clinical notes: hard negatives in training, a false-positive set in evaluation.
DEFAULT_NEGATIVE_NOTES = 900
DEFAULT_CLINICAL_NOTES = 300
# Note-level kinds reported besides the seven labels (the shapes issue 16 lists).
KIND_GROUPS: dict[str, tuple[str, ...]] = {
    "name:patient": ("patient",), "name:relative": ("relative",), "name:clinician": ("clinician",),
    "location:hospital": ("hospital",), "location:city": ("city",), "location:street": ("street",),
    "phone:phone_fax": ("phone", "fax"), "phone:pager": ("pager",),
    "date:day_and_month": ("date", "date_no_year", "date_2y"), "date:year_or_month_only": ("date_year",
                                                                                         "date_month_year"),
}
GOALS = {"NAME": 0.98, "LOCATION": 0.98, "PHONE": 0.98, "date:day_and_month": 0.95, "fp_deidentified": 0.01}


def _scanner() -> PhiScanner:
    return load_phi_scanner(DEFAULT_SUITES_DIR)


def identifier_free(notes: list[PhiNote], scanner: PhiScanner) -> list[PhiNote]:
    """The notes on which the deterministic recognizers find nothing (generated clinical notes mention ages over
    89, which are identifiers): what is left has no identifier at all, only placeholders."""
    found = scanner.findings(pa.array([n.text for n in notes], pa.string()))
    return [note for note, findings in zip(notes, found, strict=True) if not findings]


def train_phi_model(out_dir: Path, *, n_notes: int = DEFAULT_TRAIN_NOTES, steps: int = DEFAULT_STEPS,
                    n_negatives: int = DEFAULT_NEGATIVE_NOTES, seed: int | None = None, init: Path | None = None,
                    learning_rate: float = 3e-4, layers: int = DEFAULT_LAYERS, progress=None) -> dict[str, Any]:
    """Generate `n_notes` training notes and `n_negatives` identifier-free clinical notes (hard negatives, all
    O), blank their placeholders and train the tagger into `out_dir` (from MiniLM-L6, or continuing from the PHI
    checkpoint `init`)."""
    scanner = _scanner()
    notes = phi_training_notes(n_notes) if seed is None else phi_training_notes(n_notes, seed=seed)
    negatives = identifier_free(clinical_negative_notes(n_negatives), scanner) if n_negatives else []
    blanked = [dataclasses.replace(note, text=scanner.blank(note.text)) for note in notes + negatives]
    corpus = (f"pipeline.synth.phi train split, {n_notes} generated notes with planted surrogates + "
              f"{len(negatives)} identifier-free generated clinical notes of the train split "
              f"(clinical_negative_notes({n_negatives}), those the deterministic recognizers find nothing in)")
    return train_phi(Path(out_dir), blanked, steps=steps, progress=progress, base_model=init, layers=layers,
                     learning_rate=learning_rate, corpus=corpus + (f"; continued from {init}" if init else ""))


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return min(a[1], b[1]) > max(a[0], b[0])


def _ratio(hit: int, total: int) -> float | None:
    return round(hit / total, 4) if total else None


def evaluate_phi(
    model: Path | PhiTagger | None,
    *,
    n_notes: int = DEFAULT_EVAL_NOTES,
    n_deidentified: int = DEFAULT_DEID_TEXTS,
    n_clinical: int = DEFAULT_CLINICAL_NOTES,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Recall per type (note- and span-level) on held-out notes and the false-positive rate on de-identified text.

    - note-level recall of a type: share of notes holding an identifier of that type in which the gate found at
      least one of them (a finding of any type overlapping it); ``flagged`` is the share of those notes the gate
      flags at all (what quarantines the note).
    - span-level recall: share of the type's identifiers overlapped by a finding (``typed``: by a finding of the
      same type, tagger findings only).
    - false positives: share of placeholder-only texts (and of held-out notes without any identifier) flagged;
      and of `n_clinical` held-out generated clinical notes (discharge summaries and clinic notes of the "test"
      split: templates and terms training never sees) that have no identifier (``identifier_free``), the
      clinician-style text a tagger trained on identifier sentences takes brand drugs and eponyms in for names.
    """
    scanner = _scanner()
    tagger = load_phi_tagger(model, threshold=threshold) if isinstance(model, Path) else model
    notes = phi_held_out_notes(n_notes)
    started = time.perf_counter()
    found = scanner.findings(pa.array([n.text for n in notes], pa.string()), tagger=tagger)
    seconds = time.perf_counter() - started
    groups: dict[str, tuple[str, ...] | None] = {t: None for t in PHI_TYPES} | KIND_GROUPS
    stats = {g: {"notes": 0, "notes_found": 0, "notes_flagged": 0, "spans": 0, "spans_found": 0, "spans_typed": 0}
             for g in groups}
    clean_notes = clean_flagged = 0
    for note, findings in zip(notes, found, strict=True):
        findings = findings or []
        spans = [(f.start, f.end) for f in findings]
        if not note.entities:
            clean_notes += 1
            clean_flagged += bool(findings)
        for group, kinds in groups.items():
            gold = [e for e in note.entities if (e.label == group if kinds is None else e.kind in kinds)]
            if not gold:
                continue
            s = stats[group]
            s["notes"] += 1
            s["notes_flagged"] += bool(findings)
            hits = [any(_overlaps((e.start_char, e.end_char), sp) for sp in spans) for e in gold]
            s["notes_found"] += any(hits)
            s["spans"] += len(gold)
            s["spans_found"] += sum(hits)
            s["spans_typed"] += sum(
                any(_overlaps((e.start_char, e.end_char), (f.start, f.end)) and f.entity == e.label
                    for f in findings if f.source == "tagger")
                for e in gold
            )
    per_type = {
        group: {
            "notes": s["notes"], "note_recall": _ratio(s["notes_found"], s["notes"]),
            "note_flagged": _ratio(s["notes_flagged"], s["notes"]),
            "spans": s["spans"], "span_recall": _ratio(s["spans_found"], s["spans"]),
            "span_recall_typed": _ratio(s["spans_typed"], s["spans"]),
        }
        for group, s in stats.items()
    }
    deid = deidentified_sentences(n_deidentified)
    deid_found = scanner.findings(pa.array(deid, pa.string()), tagger=tagger)
    deid_flagged = sum(bool(f) for f in deid_found)
    fp_types = _finding_types(deid_found)
    clinical = identifier_free(clinical_negative_notes(n_clinical, split="test", seed=EVAL_SEED), scanner)
    clinical_found = scanner.findings(pa.array([n.text for n in clinical], pa.string()), tagger=tagger)
    clinical_flagged = sum(bool(f) for f in clinical_found)
    result = {
        "model": None if tagger is None else {"name": tagger.name, "version": tagger.version,
                                              "path": str(tagger.path)},
        "threshold": threshold if tagger is not None else None,
        "held_out": {"notes": len(notes), "notes_with_phi": len(notes) - clean_notes,
                     "identifiers": sum(len(n.entities) for n in notes), "split": "test (unseen templates and "
                     "surrogate values)", "gate_seconds": round(seconds, 2)},
        "per_type": per_type,
        "false_positives": {
            "deidentified_texts": len(deid), "deidentified_flagged": deid_flagged,
            "deidentified_rate": _ratio(deid_flagged, len(deid)), "finding_types": fp_types,
            "clean_notes": clean_notes, "clean_notes_flagged": clean_flagged,
            "clean_note_rate": _ratio(clean_flagged, clean_notes),
            "clinical_notes": len(clinical), "clinical_notes_flagged": clinical_flagged,
            "clinical_note_rate": _ratio(clinical_flagged, len(clinical)),
            "clinical_finding_types": _finding_types(clinical_found),
        },
    }
    result["goals"] = _goals(result)
    return result


def _finding_types(found: list) -> dict[str, int]:
    counts: dict[str, int] = {}
    for items in found:
        for f in items or []:
            counts[f.entity] = counts.get(f.entity, 0) + 1
    return dict(sorted(counts.items()))


def _goals(result: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, goal in GOALS.items():
        if key == "fp_deidentified":
            value = result["false_positives"]["deidentified_rate"]
            out[key] = {"goal": f"<= {goal}", "value": value, "met": value is not None and value <= goal}
        else:
            value = result["per_type"][key]["note_recall"]
            out[key] = {"goal": f">= {goal}", "value": value, "met": value is not None and value >= goal}
    return out


def phi_cost(phi_model: Path, ner_model: Path | None, *, n_notes: int = 200, seed: int = 7) -> dict[str, Any]:
    """Milliseconds per note of the whole PHI gate (blanking, rules, tagger) vs the NER stage's work on the same
    notes (the NER model's predict plus ConText assertion; the model alone is reported too).

    Without a trained NER checkpoint the base MiniLM-L6 encoder with an untrained head stands in: the NER
    forward costs the same whatever its weights.
    """
    import torch

    from pipeline.nlp.assertion import AssertionAnnotator
    from pipeline.nlp.ner import NerModel
    from pipeline.synth.notes import varied_length_texts

    texts = varied_length_texts(n_notes, seed=seed)
    scanner = _scanner()
    tagger = load_phi_tagger(phi_model)
    ner_path = ner_model if ner_model is not None and (ner_model / "config.json").is_file() else None
    with tempfile.TemporaryDirectory() as scratch:
        ner = NerModel.load(ner_path or _stand_in_ner(Path(scratch)), device="cpu")
        array = pa.array(texts, pa.string())
        tagger.predict(texts[:4])
        ner.predict(texts[:4])  # warm-up both
        t0 = time.perf_counter()
        scanner.findings(array)
        rules = time.perf_counter() - t0
        t0 = time.perf_counter()
        scanner.findings(array, tagger=tagger)
        gate = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = ner.predict(texts)
        ner_seconds = time.perf_counter() - t0
        annotator = AssertionAnnotator.create()
        t0 = time.perf_counter()
        for text, entities in zip(texts, found, strict=True):
            annotator.annotate(text, entities.starts, entities.ends, entities.labels, entities.sentence_chars)
        assertion_seconds = time.perf_counter() - t0
        stage = ner_seconds + assertion_seconds
        return {
            "notes": n_notes, "mean_chars": round(sum(map(len, texts)) / n_notes),
            "ner_model": f"{ner.name} {ner.version}" if ner_path else "stand-in: MiniLM-L6 (6 layers), untrained head",
            "phi_layers": int(tagger.model.config.num_hidden_layers),
            "cpus": os.cpu_count(),
            "ner_model_ms_per_note": round(1000 * ner_seconds / n_notes, 2),
            "ner_stage_ms_per_note": round(1000 * stage / n_notes, 2),
            "gate_ms_per_note": round(1000 * gate / n_notes, 2),
            "gate_rules_only_ms_per_note": round(1000 * rules / n_notes, 2),
            "gate_over_ner_stage": round(gate / stage, 3),
            "gate_over_ner_model": round(gate / ner_seconds, 3),
            # with a stand-in's random head the assertion step sees random entities: judge against the model alone
            "gate_over_ner": round(gate / (stage if ner_path else ner_seconds), 3),
            "compared_with": "NER stage (model + assertion)" if ner_path else "NER model alone (stand-in)",
            "goal": "gate_over_ner <= 0.5",
            "threads": torch.get_num_threads(),
        }


def _stand_in_ner(out: Path) -> Path:
    """The packaged MiniLM-L6 with an untrained PROBLEM/TREATMENT/TEST head: the NER forward's cost, any weights."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from pipeline.nlp.labels import bio_labels
    from pipeline.nlp.train import base_model_dir

    labels = bio_labels()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            base_model_dir(), local_files_only=True, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)})
    finally:
        hf_logging.set_verbosity(verbosity)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True).save_pretrained(out)
    return out


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_section(result: dict[str, Any], rules_only: dict[str, Any] | None = None, command: str = "") -> str:
    """The "## PHI gate" section of BENCHMARKS.md from an ``evaluate_phi`` result (with ``cost``)."""
    held = result["held_out"]
    model = result.get("model") or {}
    lines = [
        "## PHI gate",
        "",
        f"Reproduce: `{command or 'ehr-pipeline eval-phi --json --cost'}` (calls `pipeline.bench.phi.evaluate_phi` "
        "and `phi_cost`). Held-out generated notes: the \"test\" split of `pipeline/synth/phi.py`, whose sentence "
        "templates and surrogate values (names, cities, hospitals) training never sees; "
        f"{held['notes']} notes, {held['notes_with_phi']} with identifiers, {held['identifiers']} identifiers. "
        f"Model {model.get('name')} {model.get('version')}, threshold {result.get('threshold')} "
        "(the default, `EHR_PHI_THRESHOLD`). The gate runs as validation runs it: placeholders blanked, tagger, "
        "deterministic recognizers.",
        "",
        "Note-level recall: share of notes holding an identifier of the type in which the gate found one of "
        "them (a finding of any type overlapping it). Span-level: share of identifiers found; typed: found by "
        "the tagger with the right type.",
        "",
        "| type | notes | note recall | rules alone | span recall | typed | goal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    goals = {k: v["goal"] for k, v in result["goals"].items()}
    for group, m in result["per_type"].items():
        base = rules_only["per_type"][group]["note_recall"] if rules_only else None
        # note recall with 4 digits: the goals are checked on it, and 0.9799 misses ">= 0.98" (0.980 would hide it)
        lines.append(f"| {group} | {m['notes']} | {_fmt(m['note_recall'], 4)} | {_fmt(base)} | "
                     f"{_fmt(m['span_recall'])} | {_fmt(m['span_recall_typed'])} | {goals.get(group, '')} |")
    fp = result["false_positives"]
    lines += [
        "",
        f"False positives: {fp['deidentified_flagged']} of {fp['deidentified_texts']} placeholder-only texts "
        f"flagged ({fp['deidentified_rate']:.2%}; goal ≤ 1%), finding types {fp['finding_types'] or '{}'}; "
        f"{fp['clean_notes_flagged']} of {fp['clean_notes']} held-out notes without identifiers flagged.",
        "",
        f"Clinician-style text: {fp['clinical_notes_flagged']} of {fp['clinical_notes']} held-out generated "
        f"clinical notes without identifiers flagged ({_pct(fp['clinical_note_rate'])}; discharge summaries and "
        "clinic notes of the held-out templates and terms, brand drugs, eponyms and lab strings included; the "
        "ones with an age over 89 left out), finding types "
        f"{fp['clinical_finding_types'] or '{}'}. No goal in the issue; a flagged note is quarantined as "
        "`phi_suspected`, so this is the share of a day's notes the gate would hold.",
    ]
    if "cost" in result:
        c = result["cost"]
        lines += [
            "",
            f"Cost ({c['notes']} generated discharge-like notes, mean {c['mean_chars']} chars, CPU, "
            f"{c['threads']} torch threads, one run on a {c.get('cpus')}-core machine): the whole gate "
            f"{c['gate_ms_per_note']} ms/note (rules alone {c['gate_rules_only_ms_per_note']}), the NER stage's "
            f"model + assertion {c['ner_stage_ms_per_note']} ms/note (model alone {c['ner_model_ms_per_note']}, "
            f"{c['ner_model']}): gate / {c['compared_with']} = **{c['gate_over_ner']}** (goal ≤ 0.5); "
            f"gate / NER stage {c['gate_over_ner_stage']}, gate / NER model {c['gate_over_ner_model']}. A second head "
            f"on the NER encoder would save the tagger's {c.get('phi_layers')} layers but tie the gate to the NER "
            "checkpoint and run it before validation on every note.",
        ]
    met = [k for k, v in result["goals"].items() if v["met"]]
    missed = [k for k, v in result["goals"].items() if not v["met"]]
    lines += ["", f"Goals met: {', '.join(met) or 'none'}; missed: {', '.join(missed) or 'none'}.", ""]
    return "\n".join(lines)
