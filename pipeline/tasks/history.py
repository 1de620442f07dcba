"""Tasks on the warehouse history: bulk-load a range of days, train and evaluate the risk model on it.

``ingest_history`` is the nightly extract and validate run once over a whole range (no lake, no NER or
risk), used to seed the warehouse before the nightly runs start. The risk model learns from, and is
evaluated on, everything the warehouse holds.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import Settings, load_settings
from pipeline.contracts import arrow_schema
from pipeline.tasks.nightly import absent_warning, check_conservation, known_context, read_source
from pipeline.tasks.runs import DataQualityError, PipelineError, new_run_id, recorded


def ingest_history(start: date, end: date, *, run_id: str | None = None, settings: Settings | None = None) -> dict[str, int]:
    """Bulk-load a range of days (extract → validate → warehouse) as one batch, without NER or risk.

    Used to seed the warehouse with history before the nightly runs (and for risk-model training).
    Validation runs once over the whole range; volume checks are skipped (no per-day baseline).

    A batch that fails its batch-level checks loads no rows, but leaves its evidence where its message
    points: the quarantine and validation results replace those of the range in the warehouse (quarantined
    rows carry the range's last day, ``ds=end``, as a bulk batch files them), and its ``pipeline_runs`` rows
    say ``failed`` per table. Optional tables the source lacks (no MIMIC-IV-Note, no icu module) are
    recorded as warnings.
    """
    from pipeline.tasks.phi import validation_config as phi_validation_config
    from pipeline.validate import BatchValidationError, validate_batch
    from pipeline.warehouse import open_warehouse

    settings = settings or load_settings()
    run_id = run_id or new_run_id(start, "history")
    span = f"{start.isoformat()}..{end.isoformat()}"
    with recorded(settings, run_id, start, "ingest_history") as rec:
        result = read_source(settings, start, end, run_id)
        known, known_subjects = known_context(settings, result.tables, result.open_admissions)
        try:
            outcome = validate_batch(
                result.tables, ds=end, run_id=run_id, pre_quarantine=result.rejects, known_admissions=known,
                known_subject_ids=known_subjects, trailing_volumes={},
                config=phi_validation_config(settings), data_docs_dir=None, ds_range_start=start,
            )
        except BatchValidationError as exc:
            failed = getattr(exc, "outcome", None)
            if failed is not None:
                with open_warehouse(settings.warehouse) as wh:
                    wh.replace_days({"quarantine": failed.quarantine, "validation_results": failed.results},
                                    start, end)
                for name, c in failed.counts.items():
                    own = [f.message for f in exc.failures if getattr(f, "table", None) == name]
                    rec.add(name, c["rows_in"], c["rows_passed"], c["rows_quarantined"],
                            {"range": span, **({"batch_failures": own} if own else {})}, status="failed")
            raise DataQualityError(
                f"ingest_history {span}: the batch failed, nothing was loaded. {exc} Quarantine and "
                f"validation results of run {run_id} are in ehr.quarantine and ehr.validation_results "
                f"(ds={end}); see also ehr.pipeline_runs (stage ingest_history, ds={start})."
            ) from exc
        check_conservation(result.tables, result.rejects, outcome)
        tables = dict(outcome.passed)
        tables["quarantine"] = outcome.quarantine
        tables["validation_results"] = outcome.results
        with open_warehouse(settings.warehouse) as wh:
            written = wh.replace_days(tables, start, end)
        for name, c in outcome.counts.items():
            detail: dict[str, Any] = {"range": span}
            if name in result.absent:
                detail["warnings"] = [absent_warning(name, result.absent[name])]
            rec.add(name, c["rows_in"], c["rows_passed"], c["rows_quarantined"], detail)
    return written


def _history_tables(settings: Settings) -> dict[str, pa.Table]:
    """The whole warehouse history as the risk trainer wants it (patients: one row per subject)."""
    from pipeline.warehouse import open_warehouse

    def columns(name: str) -> str:
        # by name: a migrated table may hold its columns in another order, or extra nullable ones
        return ", ".join(arrow_schema(name).names)

    out: dict[str, pa.Table] = {}
    with open_warehouse(settings.warehouse) as wh:
        for name in ("admissions", "diagnoses", "labs", "prescriptions", "note_entities"):
            out[name] = wh.query(f"SELECT {columns(name)} FROM ehr.{name}").cast(arrow_schema(name))
        # patients are loaded once per day they appear on; keep the latest row of each
        out["patients"] = wh.query(
            f"SELECT {columns('patients')} FROM (SELECT *, row_number() OVER (PARTITION BY subject_id "
            "ORDER BY ds DESC) AS rn FROM ehr.patients) p WHERE rn = 1"
        ).cast(arrow_schema("patients"))
        # the admissions whose notes NER processed: notes of days with a successful NER run (history
        # bulk-loaded without NER has none, so its NER features are missing, not zero)
        out["ner_hadm_ids"] = wh.query(
            "SELECT DISTINCT hadm_id FROM ehr.notes WHERE hadm_id IS NOT NULL AND ds IN "
            "(SELECT DISTINCT ds FROM ehr.pipeline_runs WHERE stage LIKE 'ner[%' AND status = 'success')"
        ).column("hadm_id")
    if out["note_entities"].num_rows == 0:
        out["note_entities"] = None  # type: ignore[assignment]
    if out["admissions"].num_rows == 0:
        raise PipelineError("the warehouse holds no admissions: load history first (ehr-pipeline backfill --bulk)")
    return out


def train_risk_model(settings: Settings, out_dir: Path) -> dict[str, Any]:
    """``ehr-pipeline train-risk``: time-split training on the warehouse history, saved to ``out_dir``."""
    from pipeline.risk import train_risk_model as train

    tables = _history_tables(settings)
    return train(**tables, out_dir=out_dir, charlson_weights=settings.charlson_weights)


def evaluate_risk_model(settings: Settings, model_dir: Path) -> dict[str, Any]:
    """``ehr-pipeline eval-risk``: the model and LACE alone on the held-out later period."""
    from pipeline.risk import evaluate

    tables = _history_tables(settings)
    return evaluate(**tables, model=model_dir, out_dir=settings.reports_dir / "risk_eval", device=settings.device)
