"""The nightly tasks, one function per DAG task: extract, validate, ner, risk, load, report.

Each reads the lake (and the warehouse when it needs history), calls a stage, writes the lake or the
warehouse, and records its run in ``ehr.pipeline_runs`` (:mod:`pipeline.tasks.runs`). The Airflow DAG
and the CLI call exactly these functions. Every function is idempotent for its ``ds``: a rerun replaces
that day's lake partitions and warehouse rows.

``ner`` and ``risk`` are mapped over the day's validated parts; :func:`map_part` does what they share.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import lake
from pipeline.config import Settings, load_settings
from pipeline.contracts import INPUT_TABLES, arrow_schema, raw_arrow_schema
from pipeline.tasks.runs import (
    ConfigurationError,
    DataQualityError,
    PipelineError,
    RunRecorder,
    new_run_id,
    recorded,
)

if TYPE_CHECKING:
    from pipeline.sources import ExtractResult
    from pipeline.sources.base import SourceReader

log = logging.getLogger(__name__)

RAW, VALIDATED, ENRICHED = "raw", "validated", "enriched"
ENRICHED_TABLES = ("note_entities", "admission_risk")
ENRICHING_STAGES = ("ner[", "risk[")  # the mapped stages' run records: "ner[part-0]", ...
REJECTS, OPEN_ADMISSIONS, QUARANTINE, RESULTS = "_rejects", "_open_admissions", "_quarantine", "_results"
ABSENT = "_absent"  # raw: the optional tables (modules) the source does not have, and why
ABSENT_SCHEMA = pa.schema([pa.field("source_table", pa.string()), pa.field("detail", pa.string())])
NOTES_SKIPPED = "notes, NER and the note-based risk features are skipped for this source"


# --- extract -------------------------------------------------------------------------------------
def open_checked_source(settings: Settings) -> SourceReader:
    """The configured source, opened; a missing folder or URL, or a note module that EHR_REQUIRE_NOTES asks for
    and the source lacks, raises :class:`~pipeline.sources.SourceError` naming the setting."""
    from pipeline.sources import SourceError, absent_tables, open_source

    reader = open_source(settings.source_layout, settings.source_dir, settings.source_url, settings.source_schemas)
    if settings.require_notes:
        missing = absent_tables(reader).get("notes")
        if missing:
            raise SourceError(f"EHR_REQUIRE_NOTES=true, but {missing}: add MIMIC-IV-Note (note/discharge.csv.gz, "
                              "note/radiology.csv.gz) to the source or unset EHR_REQUIRE_NOTES")
    return reader


def read_source(settings: Settings, start: date, end: date, run_id: str) -> ExtractResult:
    """The source's rows of ``start..end``, its set-aside rows stamped with ``run_id``."""
    from pipeline.sources import extract_range

    reader = open_checked_source(settings)
    result = extract_range(reader, start, end, day_shift=settings.source_day_shift,
                           max_malformed_share=settings.max_quarantine_share,
                           min_rows_for_share=settings.min_rows_for_share_check)
    result.rejects = result.rejects.set_column(
        result.rejects.column_names.index("run_id"), "run_id", pa.array([run_id] * result.rejects.num_rows, pa.string())
    )
    return result


def extract(ds: date, *, run_id: str, settings: Settings | None = None) -> dict[str, int]:
    """Source → ``lake/raw/<table>/ds=<ds>`` (plus set-aside rows and the admissions open on ds)."""
    settings = settings or load_settings()
    with recorded(settings, run_id, ds, "extract") as rec:
        result = read_source(settings, ds, ds, run_id)
        root = settings.lake_dir
        for name, table in result.tables.items():
            lake.write_partition(root, RAW, name, ds, table, part_rows=settings.part_rows)
        lake.write_partition(root, RAW, REJECTS, ds, result.rejects, part_rows=1_000_000, bucket_key="")
        lake.write_partition(root, RAW, OPEN_ADMISSIONS, ds, result.open_admissions, part_rows=1_000_000, bucket_key="")
        lake.write_partition(root, RAW, ABSENT, ds, absent_table(result.absent), part_rows=1_000_000, bucket_key="")
        counts = result.counts()
        for name, c in counts.items():
            rec.add(name, c["rows_extracted"], c["rows_typed"], c["rows_set_aside"],
                    extract_detail(result, name, c))
    return {name: c["rows_extracted"] for name, c in counts.items()}


def absent_warning(table: str, why: str) -> str:
    """The warning a run records for an optional table its source does not have."""
    skipped = NOTES_SKIPPED if table == "notes" else f"ehr.{table} gets no rows from it"
    return f"{why}: {skipped} (a warning, not a failure)"


def absent_table(absent: Mapping[str, str]) -> pa.Table:
    return pa.table({"source_table": list(absent), "detail": list(absent.values())}, schema=ABSENT_SCHEMA)


def extract_detail(result: ExtractResult, name: str, counts: Mapping[str, int]) -> dict[str, Any] | None:
    """pipeline_runs.detail of an extract run's table: unattributed rows, and the warning of an absent table."""
    detail: dict[str, Any] = {}
    for key in ("rows_unattributed", "rows_malformed"):
        if counts[key]:
            detail[key] = counts[key]
    if name in result.absent:
        detail["warnings"] = [absent_warning(name, result.absent[name])]
    return detail or None


def read_absent(settings: Settings, ds: date) -> dict[str, str]:
    """The absent optional tables extract recorded for ``ds`` (none for a lake written before they existed)."""
    table = lake.read_partition(settings.lake_dir, RAW, ABSENT, ds, ABSENT_SCHEMA, missing_ok=True)
    return dict(zip(table.column("source_table").to_pylist(), table.column("detail").to_pylist(), strict=True))


# --- validate ------------------------------------------------------------------------------------
def known_context(settings: Settings, tables: Mapping[str, pa.Table], open_admissions: pa.Table,
                  ds: date | None = None) -> tuple[pa.Table, pa.Array]:
    """Admissions and subjects known outside this batch: in the warehouse, open in the source, or (given the
    batch's ``ds``) validated in the lake on an earlier day not loaded yet (a backfill validates its days
    before it loads any)."""
    from pipeline.tasks import asof
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
    parts = [known.cast(schema), open_admissions.select(cols).cast(schema)]
    if ds is not None:
        validated = asof.history(settings, ds, "admissions", "hadm_id", referenced)
        parts.append(validated.select(cols).cast(schema))
        validated_subjects = asof.history(settings, ds, "patients", "subject_id", subjects)
        known_subjects = pa.chunked_array(
            [*known_subjects.chunks, validated_subjects.column("subject_id").combine_chunks()], type=pa.int64())
    known = pa.concat_tables(parts)
    return known, pc.unique(known_subjects.combine_chunks()) if known_subjects.num_chunks else pa.array([], pa.int64())


def validate(ds: date, *, run_id: str, settings: Settings | None = None) -> dict[str, list[int]]:
    """``lake/raw`` → ``lake/validated`` + quarantine + expectation results; returns the part numbers to map.

    A batch that fails its batch-level checks raises :class:`DataQualityError`; its quarantine and
    validation results are written to the warehouse for that ds first, so people can see what broke,
    and its ``pipeline_runs`` rows say ``failed`` per table. Nothing goes to ``lake/validated``.
    """
    from pipeline.tasks.phi import validation_config as phi_validation_config
    from pipeline.validate import BatchValidationError, ConservationError, validate_batch
    from pipeline.warehouse import open_warehouse

    settings = settings or load_settings()
    root = settings.lake_dir
    with recorded(settings, run_id, ds, "validate") as rec:
        tables = {name: lake.read_partition(root, RAW, name, ds, raw_arrow_schema(name)) for name in INPUT_TABLES}
        rejects = lake.read_partition(root, RAW, REJECTS, ds, arrow_schema("quarantine"))
        open_adm = lake.read_partition(root, RAW, OPEN_ADMISSIONS, ds)
        absent = read_absent(settings, ds)
        known, known_subjects = known_context(settings, tables, open_adm, ds)
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
                config=phi_validation_config(settings),
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
        check_conservation(tables, rejects, outcome)
        for name in INPUT_TABLES:
            lake.write_partition(root, VALIDATED, name, ds, outcome.passed[name], part_rows=settings.part_rows)
        lake.write_partition(root, VALIDATED, QUARANTINE, ds, outcome.quarantine, part_rows=1_000_000, bucket_key="")
        lake.write_partition(root, VALIDATED, RESULTS, ds, outcome.results, part_rows=1_000_000, bucket_key="")
        for name, c in outcome.counts.items():
            detail = {
                "batch_failures": [f.message for f in outcome.batch_failures if _failure_table(f) == name],
                "warnings": [f.message for f in outcome.warnings if _failure_table(f) in (name, "all")]
                + ([absent_warning(name, absent[name])] if name in absent else []),
            }
            detail = {k: v for k, v in detail.items() if v}
            rec.add(name, c["rows_in"], c["rows_passed"], c["rows_quarantined"], detail or None)
        if outcome.data_docs_index:
            log.info("data docs built", extra={"ds": str(ds), "path": str(outcome.data_docs_index)})
    if "notes" in absent:  # no notes module: nothing for NER to map over (and no note-based risk features)
        log.warning(absent_warning("notes", absent["notes"]), extra={"ds": str(ds)})
    return {
        "notes_parts": [] if "notes" in absent else list(range(len(lake.list_parts(root, VALIDATED, "notes", ds)))),
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


def check_conservation(tables: Mapping[str, pa.Table], rejects: pa.Table, outcome: Any) -> None:
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


# --- ner and risk: one stage mapped over the day's validated parts --------------------------------
@dataclass(frozen=True)
class PartStage:
    """A stage the DAG maps over the day's parts of one validated table, writing one enriched part each."""

    name: str  # "ner": its runs are recorded as stage "ner[part-<n>]"
    reads: str  # the validated table mapped over
    writes: str  # the enriched table, one part file per part read
    counts: tuple[str, str]  # the keys of the returned counts: rows read, rows written
    model: str  # what errors call the model
    model_ready: Callable[[Path], bool]  # is the model folder usable
    model_fix: str  # how to get a model, for the error
    switch: str  # the setting that turns the stage off


@dataclass(frozen=True)
class PartOutput:
    """What a stage makes of one part: the enriched rows (a table, or record batches streamed as they are
    made) and, asked once they are written, the rows read and the run record's detail."""

    rows: pa.Table | Iterable[pa.RecordBatch]
    summary: Callable[[], tuple[int, Mapping[str, Any]]]


def map_part(stage: PartStage, ds: date, part: int, *, run_id: str, settings: Settings, model_dir: Path,
             transform: Callable[[Path], PartOutput]) -> dict[str, int]:
    """Run ``transform`` on validated part ``part`` of ``stage.reads`` and write enriched part ``part``.

    Checked before any work: the part exists (else the day was validated with fewer parts: rerun validate)
    and the model is there. The run is recorded (also when it fails); rows are written to the contract of
    ``stage.writes``, atomically per part file, and counted from the file written.
    """
    root = settings.lake_dir
    parts = lake.list_parts(root, VALIDATED, stage.reads, ds)
    if not 0 <= part < len(parts):
        raise PipelineError(
            f"{stage.name}: no {stage.reads} part {part} for {ds} (have {len(parts)}); rerun validate first"
        )
    if not stage.model_ready(model_dir):
        raise ConfigurationError(f"{stage.name}: no {stage.model} model at {model_dir}; {stage.model_fix}")
    with recorded(settings, run_id, ds, f"{stage.name}[part-{part}]", stage.writes) as rec:
        output = transform(parts[part])
        schema = arrow_schema(stage.writes)
        rows = output.rows.to_batches() if isinstance(output.rows, pa.Table) else output.rows
        batches = (batch.select(schema.names).cast(schema) for batch in rows)
        written = lake.write_part_batches(root, ENRICHED, stage.writes, ds, part, batches, schema)
        rows_out = pq.read_metadata(written).num_rows
        rows_in, detail = output.summary()
        rec.add(stage.writes, rows_in, rows_out, 0, detail)
    return dict(zip(stage.counts, (rows_in, rows_out), strict=True))


def _skipped(stage: PartStage, ds: date, part: int) -> dict[str, int]:
    log.warning("%s disabled (%s=false)", stage.model, stage.switch, extra={"ds": str(ds), "part": part})
    return dict.fromkeys(stage.counts, 0)


NER = PartStage(
    name="ner", reads="notes", writes="note_entities", counts=("notes", "entities"), model="NER",
    model_ready=lambda model_dir: (model_dir / "config.json").is_file(),
    model_fix="run `ehr-pipeline train-ner` or set EHR_NER_MODEL_PATH", switch="EHR_NER_ENABLED",
)
RISK = PartStage(
    name="risk", reads="admissions", writes="admission_risk", counts=("admissions", "scored"), model="risk",
    model_ready=Path.is_dir, model_fix="run `ehr-pipeline train-risk` or set EHR_RISK_MODEL_PATH",
    switch="EHR_RISK_ENABLED",
)


def ner(ds: date, part: int, *, run_id: str, settings: Settings | None = None) -> dict[str, int]:
    """One validated notes part → ``lake/enriched/note_entities/ds=<ds>/part-<part>.parquet``."""
    from pipeline.nlp import AssertionAnnotator, NerModel, NerStats, annotate_partition

    settings = settings or load_settings()
    if not settings.ner_enabled:
        return _skipped(NER, ds, part)

    def annotate(notes: Path) -> PartOutput:
        model, annotator = _ner_annotators(settings, NerModel, AssertionAnnotator)
        stats = NerStats()
        # streamed: notes are read in record batches and entities written as each chunk is done, so memory
        # stays at a couple of chunks whatever the partition's size
        entities = annotate_partition(lake.iter_record_batches(notes, 256), model, annotator, run_id=run_id,
                                      stats=stats)
        return PartOutput(entities, lambda: (stats.notes_in, stats.as_dict()))

    return map_part(NER, ds, part, run_id=run_id, settings=settings, model_dir=settings.ner_model_dir,
                    transform=annotate)


_NER_LOADED: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def _ner_annotators(settings: Settings, model_cls: Any, annotator_cls: Any) -> tuple[Any, Any]:
    """The NER model and the assertion pipeline, loaded once per process while the model's files and the NER
    settings stay the same. An Airflow task is a process per part, so nothing changes there; a backfill maps NER
    over every day's parts in one process, and loading both took seconds per part. A changed file (a new
    ``train-ner``, a corrupted weight) changes the key: the model is loaded, and its checksum verified, again."""
    folder = settings.ner_model_dir
    files = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file())
    key = (str(folder.resolve()), files, settings.device, settings.ner_max_length, settings.ner_token_budget,
           settings.ner_precision, settings.ner_fused_cpu)
    if key not in _NER_LOADED:
        _NER_LOADED.clear()  # one model held at a time
        model = model_cls.load(folder, device=settings.device, max_length=settings.ner_max_length,
                               token_budget=settings.ner_token_budget, precision=settings.ner_precision,
                               fused_cpu=settings.ner_fused_cpu)
        _NER_LOADED[key] = (model, annotator_cls.create())
    return _NER_LOADED[key]


def _risk_inputs(settings: Settings, ds: date, admissions: pa.Table) -> dict[str, pa.Table]:
    """Everything known at discharge for ``admissions``: today's validated rows plus the history as of ``ds``
    (:mod:`pipeline.tasks.asof`: earlier days only, from the lake, else bulk history in the warehouse)."""
    from pipeline.tasks import asof
    from pipeline.warehouse import open_warehouse

    root = settings.lake_dir
    hadm = admissions.column("hadm_id")
    subjects = admissions.column("subject_id")

    def today(name: str, key: str, values: pa.ChunkedArray) -> pa.Table:
        # a backfilled day has no partition for a table without rows that day (pipeline.tasks.backfill)
        return lake.filter_in(lake.read_partition(root, VALIDATED, name, ds, arrow_schema(name), missing_ok=True),
                              key, values)

    with open_warehouse(settings.warehouse) as wh:
        shift = settings.source_day_shift
        hist_labs = asof.history(settings, ds, "labs", "hadm_id", hadm,
                                 first=asof.first_day(admissions, shift, asof.LAB_MARGIN_DAYS), wh=wh)
        hist_adm = asof.history(settings, ds, "admissions", "subject_id", subjects,
                                first=asof.first_day(admissions, shift, asof.PRIOR_DAYS), wh=wh)
    labs = pa.concat_tables([hist_labs, today("labs", "hadm_id", hadm)])
    today_adm = lake.read_partition(root, VALIDATED, "admissions", ds, arrow_schema("admissions"))
    prior = pa.concat_tables([hist_adm, lake.filter_in(today_adm, "subject_id", subjects)])
    entities_parts = lake.list_parts(root, ENRICHED, "note_entities", ds)
    entities = ner_hadm_ids = None
    if entities_parts:
        entities = lake.filter_in(lake.read_partition(root, ENRICHED, "note_entities", ds,
                                                      arrow_schema("note_entities")), "hadm_id", hadm)
        # NER read every validated note of the day: admissions without a note have no NER count
        ner_hadm_ids = today("notes", "hadm_id", hadm).column("hadm_id")
    diagnoses = today("diagnoses", "hadm_id", hadm)  # filed on their admission's day: all of them are today's
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
        return _skipped(RISK, ds, part)
    try:  # checked before any work: equal or zero thresholds would leave a band empty
        thresholds = band_thresholds(settings.risk_band_medium, settings.risk_band_high)
    except RiskError as exc:
        raise ConfigurationError(f"risk: {exc}") from None

    def score(part_path: Path) -> PartOutput:
        admissions = pq.read_table(part_path, schema=arrow_schema("admissions"))
        model = RiskModel.load(settings.risk_model_dir, device=settings.device)
        stats: dict[str, int] = {}
        scored = score_admissions(
            **_risk_inputs(settings, ds, admissions),
            model=model,
            thresholds=thresholds,
            run_id=run_id,
            charlson_weights=settings.charlson_weights,
            stats=stats,
        )
        return PartOutput(scored, lambda: (admissions.num_rows, stats))

    return map_part(RISK, ds, part, run_id=run_id, settings=settings, model_dir=settings.risk_model_dir,
                    transform=score)


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
        for name in ENRICHED_TABLES:
            # always replaced: a rerun whose stage was skipped, or that quarantined a note, leaves nothing of
            # the earlier run's enrichment behind (no parts = none for the day)
            tables[name] = lake.read_partition(root, ENRICHED, name, ds, arrow_schema(name), missing_ok=True)
        with open_warehouse(settings.warehouse) as wh:
            written = wh.replace_days(tables, ds)
        removed = drop_raw_free_text(settings, ds)
        for name, n in written.items():
            rec.add(name, tables[name].num_rows, n, 0, {"raw_partition_removed": True} if name in removed else None)
    return written


def drop_raw_free_text(settings: Settings, ds: date) -> list[str]:
    """Raw-lake retention: once the day is loaded, its raw partitions of tables with free text go
    (``EHR_RAW_RETENTION=until_loaded``, the default), so the full text of quarantined notes or comments is
    not kept beside the warehouse. Passed rows are in the warehouse; quarantined ones keep only the hash of
    their free text. Rerunning the day's validation then needs its extract again. ``keep`` keeps them."""
    from pipeline.contracts import free_text_columns

    if settings.raw_retention == "keep":
        return []
    removed = [name for name in INPUT_TABLES if free_text_columns(name)]
    for name in removed:
        lake.clear_partition(settings.lake_dir, RAW, name, ds)
    return removed


# --- report --------------------------------------------------------------------------------------
def report(ds: date, *, run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Summarise the day: counts per table from the warehouse, conservation, drift, the run report site.

    Writes the day's drift metrics to ``ehr.drift_metrics``, the report site (``<workdir>/reports/index.html``
    and ``ds=<ds>.html``, :mod:`pipeline.tasks.reporting`) and a JSON summary. With ``EHR_ON_DRIFT=fail`` a
    drifted metric fails the task (:class:`DataQualityError`) once all of that is written.

    Conservation is checked against what is in the warehouse: per input table, rows extracted (extract run) =
    rows_in of the validate run = rows passed + rows quarantined, rows passed = rows in ``ehr.<table>`` and
    rows quarantined = rows in ``ehr.quarantine`` for the ds. A mismatch raises :class:`DataQualityError`.
    """
    from pipeline.tasks import reporting
    from pipeline.warehouse import open_warehouse

    settings = settings or load_settings()
    with recorded(settings, run_id, ds, "report") as rec:
        with open_warehouse(settings.warehouse) as wh:
            counted = (*INPUT_TABLES, "note_entities", "admission_risk", "quarantine", "validation_results")
            counts = wh.query(
                " UNION ALL ".join(f"SELECT '{t}' AS table_name, count(*) AS n FROM ehr.{t} WHERE ds = ?"
                                   for t in counted),
                [ds] * len(counted),
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
            stage_runs = wh.query(
                "SELECT stage, table_name, status, rows_out FROM ehr.pipeline_runs WHERE ds = ? AND "
                "(stage = 'load' OR stage LIKE 'ner[%' OR stage LIKE 'risk[%') ORDER BY stage", [ds]
            ).to_pylist()
        loaded = {c["table_name"]: c["n"] for c in counts}
        problems = _conservation_problems(runs, extracted, loaded, quarantined)
        problems += stage_count_problems(stage_runs, loaded)
        if problems:
            raise DataQualityError(f"report: conservation check failed for ds={ds}: " + "; ".join(problems))
        drift = reporting.check_drift(settings, ds, run_id=run_id)
        site = reporting.build_site(settings, ds)
        docs_index = settings.data_docs_dir / "index.html"
        drifted = sorted(m for m, s in zip(drift.column("metric").to_pylist(), drift.column("status").to_pylist(),
                                           strict=True) if s in ("warn", "fail"))
        summary = {
            "ds": ds.isoformat(),
            "run_id": run_id,
            "warehouse_rows": loaded,
            "validation": runs,
            # only a site that was built: a run without GX docs (or with them disabled) names none
            "data_docs": str(docs_index) if docs_index.is_file() else None,
            "report": str(settings.reports_dir / f"ds={ds.isoformat()}.html"),
            "drifted": drifted,
        }
        settings.reports_dir.mkdir(parents=True, exist_ok=True)
        path = settings.reports_dir / f"ds={ds.isoformat()}.json"
        path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        rec.add("all", None, None, None, {k: v for k, v in (("report", summary["report"]), ("index", str(site)),
                                                             ("data_docs", summary["data_docs"]),
                                                             ("drifted", drifted)) if v})
        if drifted and settings.on_drift == "fail":
            raise DataQualityError(
                f"report ds={ds}: drift in {', '.join(drifted)} (PSI above threshold; EHR_ON_DRIFT=fail). "
                f"See {summary['report']} and ehr.drift_metrics for ds={ds}."
            )
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


def stage_count_problems(stage_runs: list[dict[str, Any]], loaded: Mapping[str, int]) -> list[str]:
    """The counts each stage recorded for the day against the rows in the warehouse, one line per mismatch.

    ``load``: rows written per table = rows in ``ehr.<table>``. ``ner[...]``/``risk[...]``: the parts' rows
    written add up to the rows in ``note_entities``/``admission_risk``; with no record (stage skipped) the
    table holds none of the day. A failed part is a problem of its own.
    """
    problems = []
    for run in stage_runs:
        if run["stage"] == "load" and run["table_name"] in loaded and run["rows_out"] is not None \
                and int(run["rows_out"]) != loaded[run["table_name"]]:
            problems.append(f"{run['table_name']}: load wrote {run['rows_out']} rows, "
                            f"ehr.{run['table_name']} holds {loaded[run['table_name']]}")
    for prefix, table in zip(ENRICHING_STAGES, ENRICHED_TABLES, strict=True):
        parts = [r for r in stage_runs if r["stage"].startswith(prefix)]
        if failed := [r["stage"] for r in parts if r["status"] != "success"]:
            problems.append(f"{table}: {', '.join(failed)} did not succeed")
            continue
        recorded_rows = sum(int(r["rows_out"] or 0) for r in parts)
        if recorded_rows != loaded.get(table, 0):
            problems.append(f"{table}: {prefix.rstrip('[')} recorded {recorded_rows} rows over {len(parts)} "
                            f"part(s), ehr.{table} holds {loaded.get(table, 0)}")
    return problems


# --- whole days outside the scheduler -------------------------------------------------------------
def run_day(ds: date, *, run_id: str | None = None, settings: Settings | None = None, ner_enabled: bool = True,
            risk_enabled: bool = True, on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The DAG's stages in order for one day (what ``ehr-pipeline run`` does); then later days whose risk scores
    were computed without this day as it is now are scored again (``summary["rescored"]``), so a day run after
    later ones gives the scores a forward run gives."""
    from pipeline.tasks.daylock import day_lock
    from pipeline.tasks.preflight import check_ready

    settings = settings or load_settings()
    check_ready(settings, ner=ner_enabled, risk=risk_enabled)
    run_id = run_id or new_run_id(ds)
    step = on_step or (lambda _name: None)
    with day_lock(settings, ds, run_id=run_id, on_wait=step):  # one run per day at a time
        summary = _run_day_locked(ds, run_id, settings, ner_enabled, risk_enabled, step)
    if risk_enabled and settings.risk_enabled:
        summary["rescored"] = [rescore_day(day, settings=settings, step=step) for day in stale_risk_days(settings, [ds])]
    return summary


def _written_at(settings: Settings, stage: str, table: str, ds: date) -> float | None:
    """When the partition was last written (its newest file), None when it was never written."""
    folder = lake.partition_dir(settings.lake_dir, stage, table, ds)
    if not folder.is_dir():
        return None
    return max((p.stat().st_mtime for p in folder.iterdir()), default=None)


def stale_risk_days(settings: Settings, validated: Iterable[date]) -> list[date]:
    """Later days whose risk scores were computed before one of ``validated`` was validated as it is now: their
    features read history as of the day (:mod:`pipeline.tasks.asof`), so a day run after a later one (or run again)
    changes what the later day should have seen. Only days within the features' look-back are affected."""
    from pipeline.tasks import asof

    done = set(validated)
    stale: set[date] = set()
    for ds in sorted(done):
        written = [t for t in (_written_at(settings, VALIDATED, name, ds) for name in ("admissions", "labs")) if t]
        if not written:
            continue
        later = lake.list_days(settings.lake_dir, ENRICHED, "admission_risk", first=ds + timedelta(days=1),
                               before=ds + timedelta(days=asof.PRIOR_DAYS + 1), complete_only=False)
        stale |= {day for day in later
                  if day not in done and (_written_at(settings, ENRICHED, "admission_risk", day) or 0) < max(written)}
    return sorted(stale)


def rescore_day(ds: date, *, settings: Settings, step: Callable[[str], None] | None = None) -> date:
    """Risk again for a day whose history changed, then its load and report (its other stages' output stands)."""
    from pipeline.tasks.daylock import day_lock

    run_id = new_run_id(ds)
    step = step or (lambda _name: None)
    log.warning("rescoring a later day: an earlier day of its history was run after it", extra={"ds": str(ds)})
    with day_lock(settings, ds, run_id=run_id, on_wait=step):
        lake.clear_partition(settings.lake_dir, ENRICHED, "admission_risk", ds)
        parts = {"notes_parts": [], "admission_parts": list(range(len(
            lake.list_parts(settings.lake_dir, VALIDATED, "admissions", ds))))}
        _enrich_load_report(ds, run_id, settings, parts, False, True, lambda name: step(f"rescore {ds}: {name}"))
    return ds


def _run_day_locked(ds: date, run_id: str, settings: Settings, ner_enabled: bool, risk_enabled: bool,
                    step: Callable[[str], None]) -> dict[str, Any]:
    step("extract")
    extract(ds, run_id=run_id, settings=settings)
    step("validate")
    parts = validate(ds, run_id=run_id, settings=settings)
    _clear_enriched(settings, ds)
    return _enrich_load_report(ds, run_id, settings, parts, ner_enabled, risk_enabled, step)


def run_days(days_in_order: Iterable[date], *, settings: Settings | None = None, ner_enabled: bool = True,
             risk_enabled: bool = True, on_step: Callable[[date, str], None] | None = None) -> list[dict[str, Any]]:
    """A backfill: every day extracted and validated first, in calendar order, then enriched, loaded and
    reported in the order given. Risk features are history as of each day (:mod:`pipeline.tasks.asof`) and
    that history is all validated before any day is scored, so the scores do not depend on the order days
    are given in; later days already scored without these (:func:`stale_risk_days`) are scored again."""
    from pipeline.tasks.daylock import day_lock
    from pipeline.tasks.preflight import check_ready

    settings = settings or load_settings()
    check_ready(settings, ner=ner_enabled, risk=risk_enabled)
    step = on_step or (lambda _day, _name: None)
    days_in_order = list(dict.fromkeys(days_in_order))
    run_ids = {day: new_run_id(day) for day in days_in_order}
    parts: dict[date, dict[str, list[int]]] = {}
    for day in sorted(days_in_order):
        with day_lock(settings, day, run_id=run_ids[day], on_wait=lambda m, d=day: step(d, m)):
            step(day, "extract")
            extract(day, run_id=run_ids[day], settings=settings)
            step(day, "validate")
            parts[day] = validate(day, run_id=run_ids[day], settings=settings)
            _clear_enriched(settings, day)
    summaries = []
    for day in days_in_order:
        with day_lock(settings, day, run_id=run_ids[day], on_wait=lambda m, d=day: step(d, m)):
            summaries.append(_enrich_load_report(day, run_ids[day], settings, parts[day], ner_enabled, risk_enabled,
                                                 lambda name, d=day: step(d, name)))
    if risk_enabled and settings.risk_enabled:  # later days outside the list, scored before these were validated
        for day in stale_risk_days(settings, days_in_order):
            rescore_day(day, settings=settings, step=lambda name, d=day: step(d, name))
    return summaries


def _enrich_load_report(ds: date, run_id: str, settings: Settings, parts: dict[str, list[int]], ner_enabled: bool,
                        risk_enabled: bool, step: Callable[[str], None]) -> dict[str, Any]:
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
    """The day's enrichment starts over: its lake parts and its NER/risk run records go (the warehouse rows
    follow at load, which replaces the enriched tables whether or not their stage ran)."""
    from pipeline.warehouse import open_warehouse

    for name in ENRICHED_TABLES:
        lake.clear_partition(settings.lake_dir, ENRICHED, name, ds)
    with open_warehouse(settings.warehouse) as wh:
        wh.forget_runs(ds, ENRICHING_STAGES)


def clear_enriched(ds: date, *, settings: Settings | None = None) -> None:
    """Remove the day's enriched parts before mapped tasks write them (a rerun with fewer parts leaves none stale)."""
    _clear_enriched(settings or load_settings(), ds)


def days(start: date, end: date) -> list[date]:
    """``start..end``, both included: the days a backfill runs."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]
