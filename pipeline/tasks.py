"""Task functions: each reads the lake (and the warehouse when it needs history), calls a stage, writes the
lake or the warehouse, and records its run in ``ehr.pipeline_runs``.

The Airflow DAG and the CLI call exactly these functions. Every function is idempotent for its ``ds``:
a rerun replaces that day's lake partitions and warehouse rows.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import lake
from pipeline.config import Settings, load_settings
from pipeline.schemas import INPUT_TABLES, arrow_schema, raw_arrow_schema

log = logging.getLogger(__name__)

RAW, VALIDATED, ENRICHED = "raw", "validated", "enriched"
REJECTS, OPEN_ADMISSIONS, QUARANTINE, RESULTS = "_rejects", "_open_admissions", "_quarantine", "_results"


class PipelineError(RuntimeError):
    """A stage cannot go on; the message says which stage, which table and what to do."""


class DataQualityError(PipelineError):
    """The day's data failed a batch check or rows do not add up: retrying cannot help, people must look.

    The DAG turns it into a non-retryable task failure; the CLI reports it like any other error.
    """


def new_run_id(ds: date, prefix: str = "cli") -> str:
    return f"{prefix}__{ds.isoformat()}__{uuid.uuid4().hex[:8]}"


def _utcnow() -> datetime:
    return datetime.now().replace(microsecond=0)


# --- run records ---------------------------------------------------------------------------------
@dataclass
class RunRecorder:
    """Collects pipeline_runs rows for one stage and writes them (also when the stage fails)."""

    settings: Settings
    run_id: str
    ds: date
    stage: str
    started_at: datetime = field(default_factory=_utcnow)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, table_name: str, rows_in: int | None, rows_out: int | None, rows_quarantined: int | None = 0,
            detail: Mapping[str, Any] | None = None, ds: date | None = None, status: str = "success") -> None:
        self.rows.append(
            {
                "run_id": self.run_id,
                "ds": ds or self.ds,
                "stage": self.stage,
                "table_name": table_name,
                "status": status,
                "started_at": self.started_at,
                "finished_at": _utcnow(),
                "rows_in": rows_in,
                "rows_out": rows_out,
                "rows_quarantined": rows_quarantined,
                "detail": json.dumps(dict(detail), default=str) if detail else None,
            }
        )

    def write(self) -> None:
        if not self.rows:
            return
        from pipeline.warehouse import open_warehouse

        with open_warehouse(self.settings.warehouse) as wh:
            wh.record_runs(pa.Table.from_pylist(self.rows, schema=arrow_schema("pipeline_runs")))


@contextmanager
def recorded(settings: Settings, run_id: str, ds: date, stage: str, table_name: str = "all") -> Iterator[RunRecorder]:
    """Record the stage's rows on success; on failure record one ``failed`` row with the error, then re-raise.

    A stage that raises :class:`DataQualityError` after adding its own ``failed`` rows (per table, with
    counts) keeps them. Either way the rows replace every earlier row of this stage and ds.
    """
    rec = RunRecorder(settings, run_id, ds, stage)
    start = time.perf_counter()
    try:
        yield rec
    except Exception as exc:
        if not (isinstance(exc, DataQualityError) and rec.rows and all(r["status"] == "failed" for r in rec.rows)):
            rec.rows = []
            rec.add(table_name, None, None, None, {"error": f"{type(exc).__name__}: {exc}"[:2000]}, status="failed")
        try:
            rec.write()
        except Exception:
            log.exception("could not record the failed run", extra={"stage": stage, "ds": str(ds)})
        raise
    rec.write()
    log.info("stage done", extra={"stage": stage, "ds": str(ds), "seconds": round(time.perf_counter() - start, 2)})


# --- extract -------------------------------------------------------------------------------------
def extract(ds: date, *, run_id: str, settings: Settings | None = None) -> dict[str, int]:
    """Source → ``lake/raw/<table>/ds=<ds>`` (plus set-aside rows and the admissions open on ds)."""
    from pipeline.sources import extract_range, open_source

    settings = settings or load_settings()
    with recorded(settings, run_id, ds, "extract") as rec:
        reader = open_source(settings.source_layout, settings.source_dir, settings.source_url,
                             settings.source_schemas)
        result = extract_range(reader, ds, ds, day_shift=settings.source_day_shift)
        root = settings.lake_dir
        for name, table in result.tables.items():
            lake.write_partition(root, RAW, name, ds, table, part_rows=settings.part_rows)
        rejects = result.rejects.set_column(
            result.rejects.column_names.index("run_id"), "run_id", pa.array([run_id] * result.rejects.num_rows, pa.string())
        )
        lake.write_partition(root, RAW, REJECTS, ds, rejects, part_rows=1_000_000, bucket_key="")
        lake.write_partition(root, RAW, OPEN_ADMISSIONS, ds, result.open_admissions, part_rows=1_000_000, bucket_key="")
        counts = result.counts()
        for name, c in counts.items():
            rec.add(name, c["rows_extracted"], c["rows_typed"], c["rows_set_aside"],
                    {"rows_unattributed": c["rows_unattributed"]} if c["rows_unattributed"] else None)
    return {name: c["rows_extracted"] for name, c in counts.items()}


# --- validate ------------------------------------------------------------------------------------
def _known_context(settings: Settings, tables: Mapping[str, pa.Table], open_admissions: pa.Table) -> tuple[pa.Table, pa.Array]:
    """Admissions and subjects known outside this batch: in the warehouse, or open in the source."""
    from pipeline.warehouse import open_warehouse

    referenced = pa.chunked_array(
        [tables[t].column("hadm_id").cast(pa.int64()) for t in ("diagnoses", "labs", "prescriptions", "notes")],
        type=pa.int64(),
    )
    referenced = pc.drop_null(pc.unique(referenced))
    subjects = pc.unique(tables["admissions"].column("subject_id"))
    cols = ["hadm_id", "subject_id", "admittime", "dischtime"]
    with open_warehouse(settings.warehouse) as wh:
        known = wh.select_where_in("admissions", "hadm_id", referenced, cols)
        known_subjects = wh.select_where_in("patients", "subject_id", subjects, ["subject_id"]).column("subject_id")
    # admissions still open in the source have no dischtime yet: the reference table allows nulls
    schema = pa.schema([f.with_nullable(True) for f in known.schema])
    known = pa.concat_tables([known.cast(schema), open_admissions.select(cols).cast(schema)])
    return known, pc.unique(known_subjects.combine_chunks()) if known_subjects.num_chunks else pa.array([], pa.int64())


def validate(ds: date, *, run_id: str, settings: Settings | None = None) -> dict[str, list[int]]:
    """``lake/raw`` → ``lake/validated`` + quarantine + expectation results; returns the part numbers to map.

    A batch that fails its batch-level checks raises :class:`DataQualityError`; its quarantine and
    validation results are written to the warehouse for that ds first, so people can see what broke,
    and its ``pipeline_runs`` rows say ``failed`` per table. Nothing goes to ``lake/validated``.
    """
    from pipeline.validate import BatchValidationError, ConservationError, ValidationConfig, validate_batch
    from pipeline.warehouse import open_warehouse

    settings = settings or load_settings()
    root = settings.lake_dir
    with recorded(settings, run_id, ds, "validate") as rec:
        tables = {name: lake.read_partition(root, RAW, name, ds, raw_arrow_schema(name)) for name in INPUT_TABLES}
        rejects = lake.read_partition(root, RAW, REJECTS, ds, arrow_schema("quarantine"))
        open_adm = lake.read_partition(root, RAW, OPEN_ADMISSIONS, ds)
        known, known_subjects = _known_context(settings, tables, open_adm)
        with open_warehouse(settings.warehouse) as wh:
            trailing = wh.trailing_volumes(ds)
        try:
            outcome = validate_batch(
                tables,
                ds=ds,
                run_id=run_id,
                pre_quarantine=rejects,
                known_admissions=known,
                known_subject_ids=known_subjects,
                trailing_volumes=trailing,
                config=ValidationConfig.from_settings(settings),
                data_docs_dir=settings.data_docs_dir,
                gx_results_dir=settings.workdir_abs / "gx" / "validations",
            )
        except BatchValidationError as exc:
            _keep_failed_batch(settings, rec, ds, exc)
            raise DataQualityError(
                f"validate ds={ds}: the batch failed, nothing was passed on. {exc} "
                f"Quarantine and validation results of run {run_id} are in ehr.quarantine and "
                f"ehr.validation_results (ds={ds})."
            ) from exc
        except ConservationError as exc:
            raise DataQualityError(f"validate ds={ds}: {exc}") from exc
        _check_conservation(tables, rejects, outcome)
        for name in INPUT_TABLES:
            lake.write_partition(root, VALIDATED, name, ds, outcome.passed[name], part_rows=settings.part_rows)
        lake.write_partition(root, VALIDATED, QUARANTINE, ds, outcome.quarantine, part_rows=1_000_000, bucket_key="")
        lake.write_partition(root, VALIDATED, RESULTS, ds, outcome.results, part_rows=1_000_000, bucket_key="")
        for name, c in outcome.counts.items():
            detail = {
                "batch_failures": [f.message for f in outcome.batch_failures if _failure_table(f) == name],
                "warnings": [f.message for f in outcome.warnings if _failure_table(f) in (name, "all")],
            }
            detail = {k: v for k, v in detail.items() if v}
            rec.add(name, c["rows_in"], c["rows_passed"], c["rows_quarantined"], detail or None)
        if outcome.data_docs_index:
            log.info("data docs built", extra={"ds": str(ds), "path": str(outcome.data_docs_index)})
    return {
        "notes_parts": list(range(len(lake.list_parts(root, VALIDATED, "notes", ds)))),
        "admission_parts": list(range(len(lake.list_parts(root, VALIDATED, "admissions", ds)))),
    }


def _keep_failed_batch(settings: Settings, rec: RunRecorder, ds: date, error: Exception) -> None:
    """A failed batch still leaves its evidence: quarantine and results in the warehouse, failed run rows."""
    from pipeline.warehouse import open_warehouse

    outcome = getattr(error, "outcome", None)
    if outcome is None:
        return
    with open_warehouse(settings.warehouse) as wh:
        wh.replace_days({"quarantine": outcome.quarantine, "validation_results": outcome.results}, ds)
    failures = list(getattr(error, "failures", []) or outcome.batch_failures)
    failed_tables = sorted({_failure_table(f) for f in failures} - {None})
    for name, c in outcome.counts.items():
        own = [f.message for f in failures if _failure_table(f) == name]
        detail = {"batch_failures": own} if own else {"error": f"batch failed on {', '.join(failed_tables)}"}
        rec.add(name, c["rows_in"], c["rows_passed"], c["rows_quarantined"], detail, status="failed")


def _failure_table(failure: Any) -> str | None:
    if isinstance(failure, tuple):
        return failure[0]
    return getattr(failure, "table", None)


def _check_conservation(tables: Mapping[str, pa.Table], rejects: pa.Table, outcome: Any) -> None:
    """Rows extracted = rows passed + rows quarantined, per table (checked here too, not only in the stage)."""
    q_tables = outcome.quarantine.column("source_table")
    problems = []
    for name, table in tables.items():
        extracted = table.num_rows + int(pc.sum(pc.equal(rejects.column("source_table"), name)).as_py() or 0)
        passed = outcome.passed[name].num_rows
        quarantined = int(pc.sum(pc.equal(q_tables, name)).as_py() or 0)
        if extracted != passed + quarantined:
            problems.append(f"{name}: extracted {extracted} != passed {passed} + quarantined {quarantined}")
    if problems:
        raise DataQualityError("validate: rows lost in validation: " + "; ".join(problems))


# --- NER -----------------------------------------------------------------------------------------
def ner(ds: date, part: int, *, run_id: str, settings: Settings | None = None) -> dict[str, int]:
    """One validated notes part → ``lake/enriched/note_entities/ds=<ds>/part-<part>.parquet``."""
    from pipeline.nlp import AssertionAnnotator, NerModel, NerStats, annotate_partition

    settings = settings or load_settings()
    if not settings.ner_enabled:
        log.warning("NER disabled (EHR_NER_ENABLED=false)", extra={"ds": str(ds), "part": part})
        return {"notes": 0, "entities": 0}
    root = settings.lake_dir
    parts = lake.list_parts(root, VALIDATED, "notes", ds)
    if part >= len(parts):
        raise PipelineError(f"ner: no notes part {part} for {ds} (have {len(parts)}); rerun validate first")
    model_dir = settings.ner_model_dir
    if not (model_dir / "config.json").is_file():
        raise PipelineError(
            f"ner: no NER model at {model_dir}; run `ehr-pipeline train-ner` or set EHR_NER_MODEL_PATH"
        )
    with recorded(settings, run_id, ds, f"ner[part-{part}]", "note_entities") as rec:
        model = NerModel.load(model_dir, device=settings.device, max_length=settings.ner_max_length,
                              token_budget=settings.ner_token_budget, precision=settings.ner_precision,
                              fused_cpu=settings.ner_fused_cpu)
        annotator = AssertionAnnotator.create()
        ner_stats = NerStats()
        schema = arrow_schema("note_entities")
        # streamed: notes are read in record batches and entities written as each chunk is done, so memory
        # stays at a couple of chunks whatever the partition's size
        entities = annotate_partition(lake.iter_record_batches(parts[part], 256), model, annotator, run_id=run_id,
                                      stats=ner_stats)
        lake.write_part_batches(root, ENRICHED, "note_entities", ds, part,
                                (batch.cast(schema) for batch in entities), schema)
        stats = ner_stats.as_dict()
        rec.add("note_entities", stats.get("notes_in"), stats["entities_out"], 0, stats)
    return {"notes": stats.get("notes_in", 0), "entities": stats["entities_out"]}


# --- risk ----------------------------------------------------------------------------------------
def _risk_inputs(settings: Settings, ds: date, admissions: pa.Table) -> dict[str, pa.Table]:
    """Everything known at discharge for ``admissions``: today's validated rows plus warehouse history."""
    from pipeline.warehouse import open_warehouse

    root = settings.lake_dir
    hadm = admissions.column("hadm_id")
    subjects = admissions.column("subject_id")

    def today(name: str, key: str, values: pa.ChunkedArray) -> pa.Table:
        return lake.filter_in(lake.read_partition(root, VALIDATED, name, ds, arrow_schema(name)), key, values)

    with open_warehouse(settings.warehouse) as wh:
        hist_labs = wh.select_where_in("labs", "hadm_id", hadm)
        hist_adm = wh.select_where_in("admissions", "subject_id", subjects)
        hist_dx = wh.select_where_in("diagnoses", "hadm_id", hist_adm.column("hadm_id"))
    labs = pa.concat_tables([hist_labs.filter(pc.not_equal(hist_labs.column("ds"), pa.scalar(ds, pa.date32()))),
                             today("labs", "hadm_id", hadm)])
    today_adm = lake.read_partition(root, VALIDATED, "admissions", ds, arrow_schema("admissions"))
    prior = pa.concat_tables([hist_adm.filter(pc.not_equal(hist_adm.column("ds"), pa.scalar(ds, pa.date32()))),
                              lake.filter_in(today_adm, "subject_id", subjects)])
    entities_parts = lake.list_parts(root, ENRICHED, "note_entities", ds)
    entities = ner_hadm_ids = None
    if entities_parts:
        entities = lake.filter_in(lake.read_partition(root, ENRICHED, "note_entities", ds,
                                                      arrow_schema("note_entities")), "hadm_id", hadm)
        # NER read every validated note of the day: admissions without a note have no NER count
        ner_hadm_ids = today("notes", "hadm_id", hadm).column("hadm_id")
    diagnoses = pa.concat_tables([today("diagnoses", "hadm_id", hadm),
                                  hist_dx.filter(pc.not_equal(hist_dx.column("ds"), pa.scalar(ds, pa.date32())))])
    return {
        "admissions": admissions,
        "patients": today("patients", "subject_id", subjects),
        "diagnoses": diagnoses,
        "labs": labs,
        "prescriptions": today("prescriptions", "hadm_id", hadm),
        "prior_admissions": prior,
        "note_entities": entities,
        "ner_hadm_ids": ner_hadm_ids,
    }


def risk(ds: date, part: int, *, run_id: str, settings: Settings | None = None) -> dict[str, int]:
    """One validated admissions part → ``lake/enriched/admission_risk/ds=<ds>/part-<part>.parquet``."""
    from pipeline.risk import RiskError, RiskModel, band_thresholds, score_admissions

    settings = settings or load_settings()
    if not settings.risk_enabled:
        log.warning("risk disabled (EHR_RISK_ENABLED=false)", extra={"ds": str(ds), "part": part})
        return {"admissions": 0, "scored": 0}
    try:  # checked before any work: equal or zero thresholds would leave a band empty
        thresholds = band_thresholds(settings.risk_band_medium, settings.risk_band_high)
    except RiskError as exc:
        raise PipelineError(f"risk: {exc}") from None
    root = settings.lake_dir
    parts = lake.list_parts(root, VALIDATED, "admissions", ds)
    if part >= len(parts):
        raise PipelineError(f"risk: no admissions part {part} for {ds} (have {len(parts)}); rerun validate first")
    model_dir = settings.risk_model_dir
    if not model_dir.is_dir():
        raise PipelineError(f"risk: no risk model at {model_dir}; run `ehr-pipeline train-risk` or set EHR_RISK_MODEL_PATH")
    with recorded(settings, run_id, ds, f"risk[part-{part}]", "admission_risk") as rec:
        import pyarrow.parquet as pq

        admissions = pq.read_table(parts[part], schema=arrow_schema("admissions"))
        model = RiskModel.load(model_dir, device=settings.device)
        inputs = _risk_inputs(settings, ds, admissions)
        stats: dict[str, int] = {}
        scored = score_admissions(
            **inputs,
            model=model,
            thresholds=thresholds,
            run_id=run_id,
            charlson_weights=settings.charlson_weights,
            stats=stats,
        )
        lake.write_parts(root, ENRICHED, "admission_risk", ds, part, scored)
        rec.add("admission_risk", admissions.num_rows, scored.num_rows, 0, stats)
    return {"admissions": admissions.num_rows, "scored": scored.num_rows}


# --- load ----------------------------------------------------------------------------------------
def load(ds: date, *, run_id: str, settings: Settings | None = None) -> dict[str, int]:
    """The day's validated, enriched, quarantine and result tables → warehouse, in one transaction."""
    from pipeline.warehouse import open_warehouse

    settings = settings or load_settings()
    root = settings.lake_dir
    with recorded(settings, run_id, ds, "load") as rec:
        tables: dict[str, pa.Table] = {}
        for name in INPUT_TABLES:
            if not lake.list_parts(root, VALIDATED, name, ds):
                raise PipelineError(f"load: no validated {name} partition for {ds}; run validate first")
            tables[name] = lake.read_partition(root, VALIDATED, name, ds, arrow_schema(name))
        tables["quarantine"] = lake.read_partition(root, VALIDATED, QUARANTINE, ds, arrow_schema("quarantine"))
        tables["validation_results"] = lake.read_partition(root, VALIDATED, RESULTS, ds,
                                                           arrow_schema("validation_results"))
        for name in ("note_entities", "admission_risk"):
            # an enriched table is replaced only when its stage ran for this day
            if lake.list_parts(root, ENRICHED, name, ds):
                tables[name] = lake.read_partition(root, ENRICHED, name, ds, arrow_schema(name))
        with open_warehouse(settings.warehouse) as wh:
            written = wh.replace_days(tables, ds)
        for name, n in written.items():
            rec.add(name, tables[name].num_rows, n, 0)
    return written


# --- report --------------------------------------------------------------------------------------
def report(ds: date, *, run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Summarise the day: counts per table from the warehouse, conservation, data docs; writes a JSON report.

    Conservation is checked against what is in the warehouse: per input table, rows extracted (extract run) =
    rows_in of the validate run = rows passed + rows quarantined, rows passed = rows in ``ehr.<table>`` and
    rows quarantined = rows in ``ehr.quarantine`` for the ds. A mismatch raises :class:`DataQualityError`.
    """
    from pipeline.warehouse import open_warehouse

    settings = settings or load_settings()
    with recorded(settings, run_id, ds, "report") as rec:
        with open_warehouse(settings.warehouse) as wh:
            counts = wh.query(
                " UNION ALL ".join(
                    f"SELECT '{t}' AS table_name, count(*) AS n FROM ehr.{t} WHERE ds = ?"
                    for t in (*INPUT_TABLES, "note_entities", "admission_risk", "quarantine", "validation_results")
                ),
                [ds] * 10,
            ).to_pylist()
            runs = wh.query(
                "SELECT table_name, status, rows_in, rows_out, rows_quarantined FROM ehr.pipeline_runs "
                "WHERE ds = ? AND stage = 'validate' ORDER BY table_name",
                [ds],
            ).to_pylist()
            extracted = {r["table_name"]: r["rows_in"] for r in wh.query(
                "SELECT table_name, rows_in FROM ehr.pipeline_runs WHERE ds = ? AND stage = 'extract'", [ds]
            ).to_pylist()}
            quarantined = {r["source_table"]: r["n"] for r in wh.query(
                "SELECT source_table, count(*) AS n FROM ehr.quarantine WHERE ds = ? GROUP BY source_table", [ds]
            ).to_pylist()}
        loaded = {c["table_name"]: c["n"] for c in counts}
        problems = _conservation_problems(runs, extracted, loaded, quarantined)
        if problems:
            raise DataQualityError(f"report: conservation check failed for ds={ds}: " + "; ".join(problems))
        docs_index = settings.data_docs_dir / "index.html"
        summary = {
            "ds": ds.isoformat(),
            "run_id": run_id,
            "warehouse_rows": loaded,
            "validation": runs,
            # only a site that was built: a run without GX docs (or with them disabled) names none
            "data_docs": str(docs_index) if docs_index.is_file() else None,
        }
        settings.reports_dir.mkdir(parents=True, exist_ok=True)
        path = settings.reports_dir / f"ds={ds.isoformat()}.json"
        path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        rec.add("all", None, None, None, {k: v for k, v in (("report", str(path)),
                                                             ("data_docs", summary["data_docs"])) if v})
    return summary


def _conservation_problems(runs: list[dict[str, Any]], extracted: Mapping[str, int | None],
                           loaded: Mapping[str, int], quarantined: Mapping[str, int]) -> list[str]:
    """Every way the day's recorded and loaded counts fail to add up, one readable line each."""
    if not runs:
        return ["no validate run recorded (run validate and load first)"]
    problems = []
    for run in runs:
        name = run["table_name"]
        if run["status"] != "success":
            problems.append(f"{name}: validate run {run['status']}")
            continue
        rows_in, rows_out, rows_q = (int(run[k] or 0) for k in ("rows_in", "rows_out", "rows_quarantined"))
        if rows_in != rows_out + rows_q:
            problems.append(f"{name}: rows_in {rows_in} != rows_out {rows_out} + rows_quarantined {rows_q}")
        if name in extracted and extracted[name] is not None and extracted[name] != rows_in:
            problems.append(f"{name}: extracted {extracted[name]} != validated rows_in {rows_in}")
        if name in loaded and loaded[name] != rows_out:
            problems.append(f"{name}: {loaded[name]} rows in ehr.{name} != rows passed {rows_out}")
        if quarantined.get(name, 0) != rows_q:
            problems.append(f"{name}: {quarantined.get(name, 0)} rows in ehr.quarantine != rows quarantined {rows_q}")
    return problems


# --- whole days outside the scheduler -------------------------------------------------------------
def run_day(ds: date, *, run_id: str | None = None, settings: Settings | None = None, ner_enabled: bool = True,
            risk_enabled: bool = True, on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The DAG's stages in order for one day (what ``ehr-pipeline run`` does)."""
    settings = settings or load_settings()
    run_id = run_id or new_run_id(ds)
    step = on_step or (lambda _name: None)
    step("extract")
    extract(ds, run_id=run_id, settings=settings)
    step("validate")
    parts = validate(ds, run_id=run_id, settings=settings)
    _clear_enriched(settings, ds)
    if ner_enabled:
        for part in parts["notes_parts"]:
            step(f"ner part {part}")
            ner(ds, part, run_id=run_id, settings=settings)
    if risk_enabled:
        for part in parts["admission_parts"]:
            step(f"risk part {part}")
            risk(ds, part, run_id=run_id, settings=settings)
    step("load")
    load(ds, run_id=run_id, settings=settings)
    step("report")
    return report(ds, run_id=run_id, settings=settings)


def _clear_enriched(settings: Settings, ds: date) -> None:
    for name in ("note_entities", "admission_risk"):
        lake.clear_partition(settings.lake_dir, ENRICHED, name, ds)


def clear_enriched(ds: date, *, settings: Settings | None = None) -> None:
    """Remove the day's enriched parts before mapped tasks write them (a rerun with fewer parts leaves none stale)."""
    _clear_enriched(settings or load_settings(), ds)


def ingest_history(start: date, end: date, *, run_id: str | None = None, settings: Settings | None = None) -> dict[str, int]:
    """Bulk-load a range of days (extract → validate → warehouse) as one batch, without NER or risk.

    Used to seed the warehouse with history before the nightly runs (and for risk-model training).
    Validation runs once over the whole range; volume checks are skipped (no per-day baseline).
    """
    from pipeline.sources import extract_range, open_source
    from pipeline.validate import ValidationConfig, validate_batch
    from pipeline.warehouse import open_warehouse

    settings = settings or load_settings()
    run_id = run_id or new_run_id(start, "history")
    with recorded(settings, run_id, start, "ingest_history") as rec:
        reader = open_source(settings.source_layout, settings.source_dir, settings.source_url,
                             settings.source_schemas)
        result = extract_range(reader, start, end, day_shift=settings.source_day_shift)
        rejects = result.rejects.set_column(
            result.rejects.column_names.index("run_id"), "run_id", pa.array([run_id] * result.rejects.num_rows, pa.string())
        )
        known, known_subjects = _known_context(settings, result.tables, result.open_admissions)
        outcome = validate_batch(
            result.tables, ds=end, run_id=run_id, pre_quarantine=rejects, known_admissions=known,
            known_subject_ids=known_subjects, trailing_volumes={}, config=ValidationConfig.from_settings(settings),
            data_docs_dir=None, ds_range_start=start,
        )
        _check_conservation(result.tables, rejects, outcome)
        tables = dict(outcome.passed)
        tables["quarantine"] = outcome.quarantine
        with open_warehouse(settings.warehouse) as wh:
            written = wh.replace_days(tables, start, end)
        for name, c in outcome.counts.items():
            rec.add(name, c["rows_in"], c["rows_passed"], c["rows_quarantined"],
                    {"range": f"{start.isoformat()}..{end.isoformat()}"})
    return written


def days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def workdir_paths(settings: Settings) -> dict[str, Path]:
    return {
        "workdir": settings.workdir_abs,
        "source": settings.source_dir,
        "lake": settings.lake_dir,
        "warehouse": Path(settings.warehouse.removeprefix("duckdb:///")) if settings.warehouse.startswith("duckdb") else Path(),
        "data_docs": settings.data_docs_dir,
        "models": settings.models_dir,
    }


# --- risk model training / evaluation on the warehouse history ------------------------------------
def _history_tables(settings: Settings) -> dict[str, pa.Table]:
    """The whole warehouse history as the risk trainer wants it (patients: one row per subject)."""
    from pipeline.warehouse import open_warehouse

    out: dict[str, pa.Table] = {}
    with open_warehouse(settings.warehouse) as wh:
        for name in ("admissions", "diagnoses", "labs", "prescriptions", "note_entities"):
            out[name] = wh.query(f"SELECT * FROM ehr.{name}").cast(arrow_schema(name))
        # patients are loaded once per day they appear on; keep the latest row of each
        out["patients"] = wh.query(
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY subject_id ORDER BY ds DESC) AS rn "
            "FROM ehr.patients) p WHERE rn = 1"
        ).drop_columns(["rn"]).cast(arrow_schema("patients"))
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
