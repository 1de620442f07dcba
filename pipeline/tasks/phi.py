"""The PHI gate's model side for the tasks: load the tagger before validation (fail closed), scan an export.

``validation_config(settings)`` is what the validate and history tasks pass to ``validate_batch``: the
validation settings plus the PHI tagger. A tagger configured with ``EHR_PHI_MODEL_PATH`` must load, or the task
fails before any row is validated; without that setting the default ``<workdir>/models/phi`` is used when it
exists, and the gate runs its deterministic rules alone (with a warning) when it does not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import Settings

log = logging.getLogger(__name__)

NOTE_FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")


def phi_tagger(settings: Settings) -> Any | None:
    """The PHI tagger to run in validation, or None (gate off, or no model at the default place)."""
    if not settings.phi_gate:
        return None
    path = settings.phi_model_dir
    if settings.phi_model_path is None and not path.exists():
        log.warning("PHI tagger: no model at %s (EHR_PHI_MODEL_PATH unset); the PHI gate runs its rules only. "
                    "Train one with `ehr-pipeline train-phi`.", path)
        return None
    from pipeline.nlp.phi import load_phi_tagger

    device = "cpu" if settings.device == "auto" else settings.device
    return load_phi_tagger(path, threshold=settings.phi_threshold, device=device)


def validation_config(settings: Settings, tagger: Any | None = None):
    """``ValidationConfig`` of `settings` with the PHI tagger loaded (raises ``PhiTaggerError`` if it cannot)."""
    from pipeline.validate import ValidationConfig

    config = ValidationConfig.from_settings(settings)
    tagger = tagger if tagger is not None else phi_tagger(settings)
    return config.model_copy(update={"phi_tagger": tagger}) if tagger is not None else config


@dataclass
class ScannedNote:
    file: str
    note_id: str
    chars: int
    findings: list[dict[str, Any]]  # type, start, end, score, source; never text


def _note_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(NOTE_FILE_SUFFIXES))
    raise FileNotFoundError(f"scan-phi: {path} does not exist")


def _read_notes(path: Path) -> tuple[pa.Array, pa.Array] | None:
    """(note ids as text, note texts) of a CSV(.gz) or Parquet file, or None when it has no text column."""
    if path.name.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    else:
        from pyarrow import csv

        names = csv.read_csv(path, read_options=csv.ReadOptions(block_size=1 << 20),
                             convert_options=csv.ConvertOptions(include_columns=[])).column_names
        table = csv.read_csv(path, convert_options=csv.ConvertOptions(
            column_types={n: pa.string() for n in names}))
    lower = {name.lower(): name for name in table.column_names}
    if "text" not in lower:
        return None
    id_column = next((lower[c] for c in ("note_id", "row_id", "id") if c in lower), None)
    texts = table[lower["text"]].cast(pa.string()).combine_chunks()
    if id_column is None:
        ids = pa.array([str(i) for i in range(len(texts))], pa.string())
    else:
        ids = table[id_column].cast(pa.string()).combine_chunks()
    return ids, texts


def scan_export(path: Path, settings: Settings, *, batch_notes: int = 256) -> list[ScannedNote]:
    """Every note of the CSV/CSV.gz/Parquet file(s) at `path` (a column named text; ids from note_id, row_id or
    id), scanned by the same gate the pipeline runs: findings per note as types and offsets, never text."""
    from pipeline.validate.config import DEFAULT_SUITES_DIR
    from pipeline.validate.phi import load_phi_scanner

    scanner = load_phi_scanner(DEFAULT_SUITES_DIR)
    tagger = phi_tagger(settings.model_copy(update={"phi_gate": True}))
    out: list[ScannedNote] = []
    for file in _note_files(path):
        read = _read_notes(file)
        if read is None:
            log.warning("scan-phi: %s has no text column, skipped", file)
            continue
        ids, texts = read
        for begin in range(0, len(texts), batch_notes):
            chunk = texts.slice(begin, batch_notes)
            found = scanner.findings(chunk, tagger=tagger)
            for note_id, text, items in zip(ids.slice(begin, batch_notes).to_pylist(), chunk.to_pylist(), found,
                                            strict=True):
                out.append(ScannedNote(
                    str(file), str(note_id), len(text or ""),
                    [{"type": f.entity, "start": f.start, "end": f.end, "score": round(f.score, 3), "source": f.source}
                     for f in items or []],
                ))
    return out
