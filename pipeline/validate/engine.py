"""validate_batch: one day of canonical tables in, passed rows + quarantine + results out."""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import contracts
from pipeline.contracts import (
    INPUT_TABLES,
    TABLES_DIR,
    TIMESTAMP_TYPE,
    TableContract,
    arrow_schema,
    check_batch,
    redact_free_text,
)
from pipeline.validate.config import ValidationConfig
from pipeline.validate.derived import DerivationContext, References, add_derived
from pipeline.validate.errors import BatchFailure, BatchValidationError, ConservationError, Messages
from pipeline.validate.gx_runner import ExpectationOutcome, GxRunner
from pipeline.validate.suites import load_suite

log = logging.getLogger(__name__)

# Parents before dependents (the contracts list the input tables parents first): a quarantined patient or
# admission must be known before its children run.
TABLE_ORDER = INPUT_TABLES

QUARANTINE_SCHEMA = arrow_schema("quarantine")
RESULTS_SCHEMA = arrow_schema("validation_results")

SCHEMA_MISMATCH_RULE = "schema_mismatch"
# validation_results names of the checks this module computes itself (GX does not run them): the prefix keeps
# them apart from GX expectation labels, which are recorded only for expectations GX evaluated.
PIPELINE_CHECK = "pipeline:"
COLUMNS_PRESENT = PIPELINE_CHECK + "expect_column_to_exist"
COLUMN_TYPES = PIPELINE_CHECK + "expect_column_values_to_be_of_type"
QUARANTINE_SHARE = PIPELINE_CHECK + "expect_quarantine_share_to_be_at_most"
VOLUME = PIPELINE_CHECK + "expect_row_count_near_trailing_median"
PARENT_KEYS = {"patients": "subject_id", "admissions": "hadm_id"}


@dataclass
class ValidationOutcome:
    """What ``validate_batch`` returns; ``counts[table]`` has rows_in, rows_passed, rows_quarantined.

    ``warnings`` holds batch findings that never fail the run (an entirely empty day, see
    ``ValidationConfig.empty_day``); ``batch_failures`` those that fail it in ``"fail"`` mode.
    """

    passed: dict[str, pa.Table]
    quarantine: pa.Table
    results: pa.Table
    batch_failures: list[BatchFailure]
    counts: dict[str, dict[str, int]]
    data_docs_index: Path | None = None
    warnings: list[BatchFailure] = field(default_factory=list)


@dataclass
class _ResultRows:
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, ds: date, table: str, expectation: str, success: bool, run_id: str,
            unexpected_count: int | None = None, unexpected_percent: float | None = None) -> None:
        percent = None if unexpected_percent is None or not math.isfinite(unexpected_percent) else float(
            unexpected_percent)
        self.rows.append({
            "ds": ds, "table_name": table, "expectation": expectation, "success": bool(success),
            "unexpected_count": None if unexpected_count is None else int(unexpected_count),
            "unexpected_percent": percent, "run_id": run_id,
        })

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=RESULTS_SCHEMA)


def validate_batch(
    tables: dict[str, pa.Table],
    *,
    ds: date,
    run_id: str,
    pre_quarantine: pa.Table | None,
    known_admissions: pa.Table | None,
    known_subject_ids: pa.Array | pa.ChunkedArray | None,
    trailing_volumes: dict[str, list[int]],
    config: ValidationConfig,
    data_docs_dir: Path | None = None,
    ds_range_start: date | None = None,
    gx_results_dir: Path | None = None,
) -> ValidationOutcome:
    """Validate one day of canonical input tables with the JSON expectation suites.

    Row-level failures are quarantined (one quarantine row per input row, first rule wins, the
    rest in ``detail``); dependents of quarantined patients/admissions follow them
    (``parent_quarantined``). Batch-level failures raise :class:`BatchValidationError`
    (``on_batch_failure="fail"``, the outcome attached as ``error.outcome``) or are returned in
    ``batch_failures`` (``"warn"``). Rows are conserved per table or :class:`ConservationError` is raised.

    A day with no rows at all in any table (and none set aside) is a day without activity or a feed not
    yet delivered: its volume check is recorded and, with ``config.empty_day="warn"`` (default), returned
    in ``warnings`` rather than failing. GX results are kept under ``gx_results_dir`` (default
    ``<data_docs_dir>/../gx/validations``) so Data Docs accumulate across days.
    """
    for name in tables:
        _contract(name)  # unknown table names fail loudly
    pre = _normalise_pre_quarantine(pre_quarantine, ds, run_id)
    pre_by_table = {
        name: pre.filter(pc.equal(pre["source_table"], name)) for name in set(pre["source_table"].to_pylist())
    }
    present = [name for name in TABLE_ORDER if name in tables or name in pre_by_table]
    present += sorted(name for name in set(tables) | set(pre_by_table) if name not in TABLE_ORDER)

    known_admissions = _known_admissions(known_admissions)
    known_subjects = _ids(known_subject_ids)
    known_hadm_ids = _ids(known_admissions["hadm_id"])
    state = _ParentState()
    for name in ("patients", "admissions"):
        if name in pre_by_table:
            state.add_pre_quarantined(name, pre_by_table[name])

    results = _ResultRows()
    failures: list[BatchFailure] = []
    warned: list[BatchFailure] = []
    empty_day = pre.num_rows == 0 and all(table is None or table.num_rows == 0 for table in tables.values())
    volume_findings = warned if empty_day and config.empty_day == "warn" else failures
    passed: dict[str, pa.Table] = {}
    quarantine_parts: list[pa.Table] = [pre]
    counts: dict[str, dict[str, int]] = {}
    runner = GxRunner(run_id, data_docs_dir, ds=ds, results_dir=gx_results_dir)
    try:
        for name in present:
            contract = _contract(name)
            table = tables.get(name)
            if table is None:
                table = contract.empty()
            pre_rows = pre_by_table.get(name, pre.slice(0, 0)).num_rows
            references = References(
                batch_subject_ids=state.passed_ids("patients"),
                known_subject_ids=known_subjects,
                quarantined_subject_ids=state.quarantined_ids("patients"),
                batch_hadm_ids=state.passed_ids("admissions"),
                known_hadm_ids=known_hadm_ids,
                quarantined_hadm_ids=state.quarantined_ids("admissions"),
                admission_times=_admission_times(state.batch_admissions, known_admissions),
                parent_rules={parent: state.rules(parent) for parent in PARENT_KEYS},
            )
            context = DerivationContext(ds=ds, config=config, references=references, ds_range_start=ds_range_start,
                                        table=name)
            table_passed, table_quarantine = _validate_table(
                name, table, contract, context, runner, run_id, results, failures
            )
            passed[name] = table_passed
            quarantine_parts.append(table_quarantine)
            if name in PARENT_KEYS:
                state.add_table(name, table_passed, table_quarantine, table)
            counts[name] = {
                "rows_in": table.num_rows + pre_rows,
                "rows_passed": table_passed.num_rows,
                "rows_quarantined": table_quarantine.num_rows + pre_rows,
            }
            _batch_checks(name, counts[name], trailing_volumes.get(name) or [], ds, run_id, config,
                          results, failures, volume_findings)
        data_docs_index = runner.build_docs()
    finally:
        runner.close()

    if warned:
        warned.insert(0, BatchFailure("all", VOLUME, Messages.W101_EMPTY_DAY.format(
            ds=ds, tables=", ".join(f.table for f in warned))))
    quarantine = pa.concat_tables(quarantine_parts).cast(QUARANTINE_SCHEMA)
    _check_conservation(counts, quarantine)
    outcome = ValidationOutcome(
        passed=passed, quarantine=quarantine, results=results.table(), batch_failures=failures,
        counts=counts, data_docs_index=data_docs_index, warnings=warned,
    )
    for name, numbers in counts.items():
        log.info("validate ds=%s run_id=%s table=%s rows_in=%d rows_passed=%d rows_quarantined=%d",
                 ds, run_id, name, numbers["rows_in"], numbers["rows_passed"], numbers["rows_quarantined"])
    for failure in failures:
        log.warning("validate batch failure ds=%s run_id=%s: %s", ds, run_id, failure.message)
    if warned:
        log.warning("validate ds=%s run_id=%s: %s", ds, run_id, warned[0].message)
    if failures and config.on_batch_failure == "fail":
        error = BatchValidationError("; ".join(f.message for f in failures), failures)
        error.outcome = outcome  # type: ignore[attr-defined]
        raise error
    return outcome


def _contract(name: str) -> TableContract:
    if name not in contracts.all_contracts():  # (a malformed contract file raises ContractError here)
        raise ValueError(Messages.E202_UNKNOWN_TABLE.format(table=name, tables_dir=TABLES_DIR))
    return contracts.contract(name)


def _validate_table(
    name: str,
    table: pa.Table,
    contract: TableContract,
    context: DerivationContext,
    runner: GxRunner,
    run_id: str,
    results: _ResultRows,
    failures: list[BatchFailure],
) -> tuple[pa.Table, pa.Table]:
    ds = context.ds
    config = context.config
    check = check_batch(table, name)
    total = len(contract.columns)
    results.add(ds, name, f"{COLUMNS_PRESENT}(contract)", not check.missing, run_id,
                len(check.missing), 100.0 * len(check.missing) / total)
    results.add(ds, name, f"{COLUMN_TYPES}(contract)", not check.wrong_types, run_id,
                len(check.wrong_types), 100.0 * len(check.wrong_types) / total)
    if check.missing:
        failures.append(BatchFailure(name, COLUMNS_PRESENT, Messages.E101_MISSING_COLUMN.format(
            table=name, columns=", ".join(check.missing), missing=len(check.missing), total=total)))
    if check.wrong_types:
        failures.append(BatchFailure(name, COLUMN_TYPES, Messages.E102_WRONG_TYPE.format(
            table=name, details="; ".join(check.wrong_types.values()))))
    conformed = check.table
    if check.uncastable:
        # Rows that cannot take the canonical types cannot be stored: set all of them aside.
        rows = np.arange(table.num_rows, dtype=np.int64)
        detail = f"column(s) {', '.join(check.uncastable)} not castable to the contract type"
        found = pa.table({"row": rows, "ordinal": np.zeros(len(rows), np.int32),
                          "rule": pa.array([SCHEMA_MISMATCH_RULE] * len(rows), pa.string()),
                          "text": pa.array([f"{SCHEMA_MISMATCH_RULE}: {detail}"] * len(rows), pa.string())})
        quarantine = _quarantine_rows(name, table, conformed, contract, found, ds, run_id)
        return conformed.slice(0, 0), quarantine

    suite = load_suite(config.suites_dir, name).enabled({"phi_gate": config.phi_gate})
    with_derived = add_derived(conformed, suite.columns(), context)
    frame_columns = sorted(c for c in suite.columns() if c in with_derived.column_names)
    frame = with_derived.select(frame_columns).to_pandas(date_as_object=False)
    present = with_derived.column("_ds_text").unique().to_pylist() if "_ds_text" in with_derived.column_names \
        else []
    parameters = {"run_ds": _run_days(ds, context.ds_range_start, present), "note_max_chars": config.note_max_chars}
    outcomes = runner.run(suite, frame, parameters)

    found_parts = []
    for outcome in outcomes:
        spec = outcome.spec
        results.add(ds, name, spec.label, outcome.success, run_id, outcome.unexpected_count,
                    outcome.unexpected_percent)
        if outcome.error is not None:
            failures.append(BatchFailure(name, spec.label, Messages.E106_EXPECTATION_ERROR.format(
                table=name, expectation=spec.label, error=outcome.error, suites_dir=config.suites_dir)))
            continue
        if outcome.success:
            continue
        if spec.level == "batch":
            failures.append(BatchFailure(name, spec.label, Messages.E105_BATCH_EXPECTATION.format(
                table=name, expectation=spec.label, observed=outcome.observed, run_id=run_id)))
            continue
        if outcome.row_indices is None:
            failures.append(BatchFailure(name, spec.label, Messages.E107_NO_ROW_INDICES.format(
                table=name, expectation=spec.label)))
            continue
        found_parts.append(_describe(outcome, with_derived, context))

    if not found_parts:
        return conformed, _empty_quarantine()
    found = pa.concat_tables(found_parts)
    quarantine = _quarantine_rows(name, conformed, conformed, contract, found, ds, run_id)
    keep = np.ones(conformed.num_rows, dtype=bool)
    keep[pc.unique(found["row"]).to_numpy()] = False
    return conformed.filter(pa.array(keep)), quarantine


def _describe(outcome: ExpectationOutcome, table: pa.Table, context: DerivationContext) -> pa.Table:
    """One row per failing input row: row position, rule priority, rule, and a detail fragment."""
    spec = outcome.spec
    rows = pa.array(outcome.row_indices, pa.int64())
    text: pa.Array = pa.array([f"{spec.rule}: {spec.label}"] * len(rows), pa.string())
    detail_column = spec.meta.get("detail_column")
    if detail_column:
        values = pc.fill_null(pc.cast(pc.take(table[detail_column], rows), pa.string()), "")
        text = pc.binary_join_element_wise(text, f" [{detail_column}=", values, "]", "")
    parent = spec.meta.get("parent")
    if parent:
        keys = pc.take(table[parent["key"]], rows)
        known = context.references.parent_rules[parent["table"]]
        parent_rule = pc.take(known["rule"], pc.index_in(keys, value_set=known["key"]))
        text = pc.binary_join_element_wise(
            f"{spec.rule}: parent {parent['table']} {parent['key']}=",
            pc.fill_null(pc.cast(keys, pa.string()), "null"),
            " rule=", pc.fill_null(parent_rule, "unknown"), "",
        )
    return pa.table({
        "row": rows,
        "ordinal": pa.array(np.full(len(rows), outcome.ordinal, np.int32)),
        "rule": pa.array([spec.rule] * len(rows), pa.string()),
        "text": text,
    })


def _quarantine_rows(
    name: str, source: pa.Table, conformed: pa.Table, contract: TableContract, found: pa.Table,
    ds: date, run_id: str,
) -> pa.Table:
    """Collapse per-expectation failures to one quarantine row per input row (first rule wins)."""
    ordered = found.sort_by([("row", "ascending"), ("ordinal", "ascending")])
    grouped = ordered.group_by("row", use_threads=False).aggregate([("rule", "first"), ("text", "list")])
    grouped = grouped.sort_by("row")
    rows = grouped["row"]
    record_key = _record_keys(pc.take(conformed, rows), contract.primary_key)
    payload = _payloads(redact_free_text(name, pc.take(source, rows)))  # no note text in the warehouse
    count = len(rows)
    # a row is quarantined on its own day (a batch of several days, e.g. a backfill chunk, keeps them apart)
    own_day = pc.take(source, rows)["ds"].cast(pa.date32()) if "ds" in source.column_names else None
    return pa.table({
        "ds": pa.array([ds] * count, pa.date32()) if own_day is None else pc.fill_null(own_day, pa.scalar(ds, pa.date32())),
        "source_table": pa.array([name] * count, pa.string()),
        "record_key": record_key,
        "rule": grouped["rule_first"],
        "detail": pc.binary_join(grouped["text_list"], "; "),
        "payload": pa.array(payload, pa.string()),
        "run_id": pa.array([run_id] * count, pa.string()),
    }).cast(QUARANTINE_SCHEMA)


def _record_keys(rows: pa.Table, primary_key: tuple[str, ...]) -> pa.Array:
    if not primary_key:
        return pa.nulls(rows.num_rows, pa.string())
    parts = [pc.cast(rows[column], pa.string()) for column in primary_key]
    if len(parts) == 1:
        return parts[0].combine_chunks() if isinstance(parts[0], pa.ChunkedArray) else parts[0]
    joined = pc.binary_join_element_wise(*parts, "|", null_handling="emit_null")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": JSON has no literal for them
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _payloads(rows: pa.Table) -> list[str]:
    """Quarantined rows as JSON (timestamps ISO); only the set-aside rows are serialised.

    Callers pass rows through :func:`pipeline.contracts.redact_free_text` first: note text never goes in.
    """
    return [
        json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=False, allow_nan=False, default=str)
        for row in rows.to_pylist()
    ]


def _empty_quarantine() -> pa.Table:
    return QUARANTINE_SCHEMA.empty_table()


def _normalise_pre_quarantine(pre: pa.Table | None, ds: date, run_id: str) -> pa.Table:
    if pre is None or pre.num_rows == 0:
        return _empty_quarantine()
    columns = {}
    for column in QUARANTINE_SCHEMA:
        if column.name in pre.column_names:
            columns[column.name] = pc.cast(pre[column.name], column.type)
        else:
            columns[column.name] = pa.nulls(pre.num_rows, column.type)
    columns["ds"] = pc.fill_null(columns["ds"], pa.scalar(ds, pa.date32()))
    columns["run_id"] = pc.fill_null(columns["run_id"], run_id)
    return pa.table(columns).cast(QUARANTINE_SCHEMA)


def _ids(values: pa.Array | pa.ChunkedArray | None) -> pa.Array:
    if values is None:
        return pa.array([], pa.int64())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return pc.unique(pc.drop_null(pc.cast(values, pa.int64())))


def _known_admissions(known: pa.Table | None) -> pa.Table:
    schema = arrow_schema("admissions")
    schema = pa.schema([schema.field(c).with_nullable(True) for c in ("hadm_id", "subject_id", "admittime", "dischtime")])
    if known is None:
        return schema.empty_table()
    return pa.table({f.name: (pc.cast(known[f.name], f.type) if f.name in known.column_names
                              else pa.nulls(known.num_rows, f.type)) for f in schema})


def _admission_times(batch: pa.Table | None, known: pa.Table) -> pa.Table:
    """hadm_id -> admittime, dischtime; this batch's rows win over known ones (index_in takes the first)."""
    parts = []
    if batch is not None and batch.num_rows:
        parts.append(pa.table({
            "hadm_id": pc.cast(batch["hadm_id"], pa.int64()),
            "admittime": pc.cast(batch["admittime"], TIMESTAMP_TYPE),
            "dischtime": pc.cast(batch["dischtime"], TIMESTAMP_TYPE),
        }))
    parts.append(known.select(["hadm_id", "admittime", "dischtime"]))
    return pa.concat_tables(parts)


class _ParentState:
    """Passed and quarantined keys of parent tables (patients, admissions) seen so far."""

    def __init__(self) -> None:
        self.passed: dict[str, pa.Array] = {}
        self.quarantined: dict[str, list[pa.Table]] = {"patients": [], "admissions": []}
        self.batch_admissions: pa.Table | None = None

    def add_pre_quarantined(self, name: str, pre: pa.Table) -> None:
        keys = pre["record_key"]
        numeric = pc.fill_null(pc.match_substring_regex(keys, r"^-?\d+$"), False)
        subset = pre.filter(numeric)
        self.quarantined[name].append(pa.table({
            "key": pc.cast(subset["record_key"], pa.int64()), "rule": pc.cast(subset["rule"], pa.string())}))

    def add_table(self, name: str, passed: pa.Table, quarantine: pa.Table, validated: pa.Table) -> None:
        key = PARENT_KEYS[name]
        self.passed[name] = _ids(passed[key])
        if name == "admissions":
            self.batch_admissions = validated
        if quarantine.num_rows:
            numeric = pc.fill_null(pc.match_substring_regex(quarantine["record_key"], r"^-?\d+$"), False)
            subset = quarantine.filter(numeric)
            self.quarantined[name].append(pa.table({
                "key": pc.cast(subset["record_key"], pa.int64()), "rule": subset["rule"]}))

    def passed_ids(self, name: str) -> pa.Array:
        return self.passed.get(name, pa.array([], pa.int64()))

    def rules(self, name: str) -> pa.Table:
        parts = self.quarantined[name]
        if not parts:
            return pa.table({"key": pa.array([], pa.int64()), "rule": pa.array([], pa.string())})
        return pa.concat_tables(parts)

    def quarantined_ids(self, name: str) -> pa.Array:
        return _ids(self.rules(name)["key"])


def _batch_checks(
    name: str, numbers: dict[str, int], trailing: list[int], ds: date, run_id: str,
    config: ValidationConfig, results: _ResultRows, failures: list[BatchFailure],
    volume_findings: list[BatchFailure],
) -> None:
    rows_in, quarantined, rows_passed = numbers["rows_in"], numbers["rows_quarantined"], numbers["rows_passed"]
    share = quarantined / rows_in if rows_in else 0.0
    share_label = f"{QUARANTINE_SHARE}({config.max_quarantine_share:g})"
    share_failed = rows_in >= config.min_rows_for_share_check and share > config.max_quarantine_share
    results.add(ds, name, share_label, not share_failed, run_id, quarantined, 100.0 * share)
    if share_failed:
        failures.append(BatchFailure(name, QUARANTINE_SHARE,
                                     Messages.E103_QUARANTINE_SHARE.format(
                                         table=name, quarantined=quarantined, rows_in=rows_in, share=share,
                                         limit=config.max_quarantine_share, ds=ds)))
    if len(trailing) < config.volume_min_days:
        return
    median = float(statistics.median(trailing))
    if median <= 0:  # a table that is usually empty has no meaningful ratio
        return
    low, high = median / config.volume_factor, median * config.volume_factor
    volume_failed = not (low <= rows_passed <= high)
    results.add(ds, name, f"{VOLUME}(x{config.volume_factor:g})", not volume_failed, run_id)
    if volume_failed:
        volume_findings.append(BatchFailure(name, VOLUME, Messages.E104_VOLUME.format(
            table=name, rows=rows_passed, median=median, days=len(trailing), low=low, high=high,
            factor=config.volume_factor, ds=ds)))


def _check_conservation(counts: dict[str, dict[str, int]], quarantine: pa.Table) -> None:
    per_table = dict(zip(*[c.to_pylist() for c in
                           quarantine.group_by("source_table").aggregate([("rule", "count")]).columns],
                         strict=True)) if quarantine.num_rows else {}
    for name, numbers in counts.items():
        if (numbers["rows_in"] != numbers["rows_passed"] + numbers["rows_quarantined"]
                or per_table.get(name, 0) != numbers["rows_quarantined"]):
            raise ConservationError(Messages.E201_CONSERVATION.format(table=name, **numbers))


def _run_days(ds: date, ds_range_start: date | None, present: Iterable[str | None] = ()) -> list[str]:
    """The days a batch may hold: ``ds`` alone, or the days of a bulk range ending at ``ds``.

    For a range, only its days that ``present`` (the table's ISO days) holds: the same check (a day of the table
    in the range is in the set, one outside is not) without a value set of every day of decades of history,
    which Great Expectations would copy and serialise per expectation.

    >>> _run_days(date(2026, 1, 3), date(2026, 1, 1), ["2026-01-02", "2025-12-31", None])
    ['2026-01-02']
    >>> _run_days(date(2026, 1, 3), None)
    ['2026-01-03']
    """
    start = ds_range_start or ds
    if start == ds:
        return [ds.isoformat()]
    first, last = start.isoformat(), ds.isoformat()
    return sorted({d for d in present if d is not None and first <= d <= last})
