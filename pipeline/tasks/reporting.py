"""The run report's I/O: drift checks into ``ehr.drift_metrics`` and the static site in ``<workdir>/reports/``.

Everything here is read from the warehouse (never the lake or the source), so the report of any range of
days can be rebuilt from the warehouse alone (``ehr-pipeline report --start D1 --end D2``). The nightly
``report`` task calls :func:`check_drift` and :func:`build_site` for its day; the drift computation
(:mod:`pipeline.report.drift`) and the pages (:mod:`pipeline.report.site`) get Arrow tables and never
open the warehouse themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import Settings
from pipeline.contracts import INPUT_TABLES, OUTPUT_TABLES
from pipeline.report.drift import Sample, categorical_shares, counted_shares, drift_rows, numeric_shares
from pipeline.report.site import ReportData, write_site

log = logging.getLogger(__name__)

#: Tables whose rows per day the report counts: every input table (so tables added to the contracts appear by
#: themselves) and the day-partitioned outputs, but not the pipeline's own bookkeeping.
COUNTED_TABLES: tuple[str, ...] = INPUT_TABLES + tuple(t for t in OUTPUT_TABLES
                                                       if t not in ("pipeline_runs", "drift_metrics"))
_ASSERTION = ("CASE WHEN is_negated THEN 'negated' WHEN is_family THEN 'family' WHEN is_hypothetical THEN "
              "'hypothetical' WHEN is_uncertain THEN 'uncertain' WHEN is_historical THEN 'historical' "
              "ELSE 'affirmed' END")
_SECONDS_PER_DAY = 86_400.0


def _query(wh: Any, sql: str, params: Sequence[object]) -> pa.Table:
    return wh.query(sql, list(params))


# --- drift -------------------------------------------------------------------------------------------
def drift_samples(wh: Any, ds: date, reference_start: date) -> list[Sample]:
    """The day's and the reference window's values of every drift metric (the window ends the day before)."""
    window = [reference_start, ds]
    samples: list[Sample] = []

    def split(table: pa.Table, column: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
        today = pc.equal(table.column("ds"), pa.scalar(ds, pa.date32()))
        return table.filter(pc.invert(today)).column(column), table.filter(today).column(column)

    # the risk model's inputs: the admission itself and its patient (ages as the model sees them)
    admissions = _query(wh, (
        "SELECT a.ds, a.admission_type, a.admittime, a.dischtime, p.gender, "
        "p.anchor_age + CAST(EXTRACT(YEAR FROM a.admittime) AS INTEGER) - p.anchor_year AS age "
        "FROM ehr.admissions a LEFT JOIN ehr.patients p ON p.subject_id = a.subject_id AND p.ds = a.ds "
        "WHERE a.ds BETWEEN ? AND ?"), window)
    stay = pc.subtract(admissions.column("dischtime").cast(pa.timestamp("us")).cast(pa.int64()),
                       admissions.column("admittime").cast(pa.timestamp("us")).cast(pa.int64()))
    admissions = admissions.append_column("los_days", pc.divide(pc.cast(stay, pa.float64()), _SECONDS_PER_DAY * 1e6))
    for column in ("admission_type", "gender"):
        samples.append(Sample(f"risk_input:{column}", categorical_shares(*split(admissions, column))))
    for column in ("age", "los_days"):
        samples.append(Sample(f"risk_input:{column}", numeric_shares(*split(admissions, column))))

    # the indices the model takes as inputs, and what it (and LACE) gives out
    risk = _query(wh, "SELECT ds, charlson_index, elixhauser_vw, lace_score, readmit_30d_prob, mortality_prob, "
                      "risk_band FROM ehr.admission_risk WHERE ds BETWEEN ? AND ?", window)
    for column in ("charlson_index", "elixhauser_vw"):
        samples.append(Sample(f"risk_input:{column}", numeric_shares(*split(risk, column))))
    for column in ("readmit_30d_prob", "mortality_prob", "lace_score"):
        samples.append(Sample(f"risk_output:{column}", numeric_shares(*split(risk, column))))
    samples.append(Sample("risk_output:risk_band", categorical_shares(*split(risk, "risk_band"))))

    # NER: the share of each label among the entities, and of each assertion status
    for metric, expression in (("ner:label", "label"), ("ner:assertion", _ASSERTION)):
        counted = _query(wh, f"SELECT ds, {expression} AS category, count(*) AS n FROM ehr.note_entities "
                             f"WHERE ds BETWEEN ? AND ? GROUP BY ds, {expression}", window)
        samples.append(Sample(metric, counted_shares(*_split_counts(counted, ds))))
    return samples


def _split_counts(counted: pa.Table, ds: date) -> tuple[dict[str, float], dict[str, float]]:
    reference: dict[str, float] = {}
    current: dict[str, float] = {}
    for row in counted.to_pylist():
        side = current if row["ds"] == ds else reference
        side[row["category"]] = side.get(row["category"], 0.0) + float(row["n"])
    return reference, current


def check_drift(settings: Settings, ds: date, *, run_id: str) -> pa.Table:
    """Compute the day's drift metrics and replace its rows in ``ehr.drift_metrics``; returns them."""
    from pipeline.warehouse import open_warehouse

    reference_start = ds - timedelta(days=settings.drift_reference_days)
    with open_warehouse(settings.warehouse) as wh:
        rows = drift_rows(ds, drift_samples(wh, ds, reference_start), reference_start=reference_start,
                          reference_end=ds - timedelta(days=1), psi_threshold=settings.drift_psi_threshold,
                          min_rows=settings.drift_min_rows, on_drift=settings.on_drift, run_id=run_id)
        wh.replace_days({"drift_metrics": rows}, ds)
    drifted = rows.filter(pc.is_in(rows.column("status"), pa.array(["warn", "fail"])))
    if drifted.num_rows:
        log.warning("drift on %s: %s", ds, ", ".join(drifted.column("metric").to_pylist()),
                    extra={"ds": str(ds), "metrics": drifted.num_rows})
    return rows


# --- the site ----------------------------------------------------------------------------------------
def report_data(wh: Any, first: date, last: date, *, trailing_days: int, data_docs: Path | None,
                pages_from: date | None = None) -> ReportData:
    """Everything the index (trends over ``first..last``) and the day pages from ``pages_from`` (default
    ``first``) show, read from the warehouse; row counts from ``trailing_days`` earlier, for the medians."""
    window = [min(first, pages_from or first), last]
    counts_from = window[0] - timedelta(days=trailing_days)
    counts = _query(wh, " UNION ALL ".join(
        f"SELECT '{t}' AS table_name, ds, count(*) AS row_count FROM ehr.{t} WHERE ds BETWEEN ? AND ? GROUP BY ds"
        for t in COUNTED_TABLES), [counts_from, last] * len(COUNTED_TABLES))
    loaded_days = _query(wh, "SELECT DISTINCT ds FROM ehr.pipeline_runs WHERE stage = 'load' AND ds BETWEEN ? AND ?",
                         window).column("ds").to_pylist()
    return ReportData(
        first=first,
        last=last,
        page_days=sorted(set(loaded_days) | {last}),
        counted_tables=COUNTED_TABLES,
        input_tables=INPUT_TABLES,
        trailing_days=trailing_days,
        table_counts=counts,
        quarantine=_query(wh, "SELECT ds, source_table, rule, count(*) AS n FROM ehr.quarantine "
                              "WHERE ds BETWEEN ? AND ? GROUP BY ds, source_table, rule", window),
        quality=_query(wh, "SELECT ds, table_name, expectations_evaluated, expectations_passed, pass_rate, "
                           "rows_extracted, rows_passed, rows_quarantined, validate_status "
                           "FROM ehr.v_data_quality_daily WHERE ds BETWEEN ? AND ?", window),
        entities=_query(wh, "SELECT ds, label, count(*) AS n, "
                            "CAST(sum(CASE WHEN is_negated THEN 1 ELSE 0 END) AS BIGINT) AS negated "
                            "FROM ehr.note_entities WHERE ds BETWEEN ? AND ? GROUP BY ds, label", window),
        risk_bands=_query(wh, "SELECT ds, risk_band, count(*) AS n FROM ehr.admission_risk "
                              "WHERE ds BETWEEN ? AND ? GROUP BY ds, risk_band", window),
        readmit=_query(wh, "SELECT ds, readmit_30d_prob FROM ehr.admission_risk "
                           "WHERE ds BETWEEN ? AND ? AND risk_band <> 'deceased'", window),
        stages=_query(wh, "SELECT ds, stage, status, started_at, finished_at FROM ehr.pipeline_runs "
                          "WHERE ds BETWEEN ? AND ?", window),
        drift=_query(wh, "SELECT ds, metric, reference_start, reference_end, reference_rows, current_rows, bins, "
                         "value, threshold, status FROM ehr.drift_metrics WHERE ds BETWEEN ? AND ?", window),
        data_docs=data_docs,
    )


def build_site(settings: Settings, last: date, *, pages_from: date | None = None) -> Path:
    """Write the index (trends over the ``report_days`` days up to ``last``) and the day pages of
    ``pages_from..last`` (default: ``last`` only); returns the index's path."""
    from pipeline.warehouse import open_warehouse

    first = last - timedelta(days=settings.report_days - 1)
    docs = settings.data_docs_dir / "index.html"
    with open_warehouse(settings.warehouse) as wh:
        data = report_data(wh, first, last, trailing_days=settings.drift_reference_days,
                           data_docs=docs if docs.is_file() else None, pages_from=pages_from)
    index = write_site(data, settings.reports_dir, pages_from=pages_from or last)
    log.info("run report: %s", index, extra={"ds": str(last), "path": str(index)})
    return index


def rebuild(settings: Settings, start: date, end: date, *, run_id: str) -> Path:
    """``ehr-pipeline report``: recompute the drift metrics of every loaded day of ``start..end`` and write
    the site (day pages of the range, index up to ``end``) from the warehouse alone."""
    from pipeline.warehouse import open_warehouse

    with open_warehouse(settings.warehouse) as wh:
        loaded = wh.query("SELECT DISTINCT ds FROM ehr.pipeline_runs WHERE stage = 'load' AND ds BETWEEN ? AND ? "
                          "ORDER BY ds", [start, end]).column("ds").to_pylist()
    for day in loaded:
        check_drift(settings, day, run_id=run_id)
    return build_site(settings, end, pages_from=start)
