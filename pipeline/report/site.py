"""The static report site: ``index.html`` (trends over the report window) and one ``ds=<day>.html`` per day.

Plain HTML with inline CSS and PNG plots in ``img/`` beside the pages: no JavaScript, no CDN, nothing
fetched, so the site opens from a closed network or a file share. Pages show ids, counts, rates and
metric names only; no column that can hold note text is ever read into :class:`ReportData`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from pipeline.report import plots

IMAGES = "img"
DRIFT_ALERTS = ("warn", "fail")


@dataclass(frozen=True)
class ReportData:
    """The aggregates the pages show (each an Arrow table with a ``ds`` column), read by the report task."""

    first: date  # the index's trend window: first..last
    last: date
    page_days: Sequence[date]  # days that get a page (days the pipeline loaded, and ``last``)
    counted_tables: Sequence[str]  # tables counted per day, in page order
    input_tables: Sequence[str]
    trailing_days: int  # days before a day its rows are compared with (median)
    table_counts: pa.Table  # table_name, ds, row_count (from trailing_days before the first page day)
    quarantine: pa.Table  # ds, source_table, rule, n
    quality: pa.Table  # v_data_quality_daily rows
    entities: pa.Table  # ds, label, n, negated
    risk_bands: pa.Table  # ds, risk_band, n
    readmit: pa.Table  # ds, readmit_30d_prob (admissions discharged alive)
    stages: pa.Table  # ds, stage, status, started_at, finished_at (pipeline_runs rows)
    drift: pa.Table  # drift_metrics rows
    data_docs: Path | None  # the Great Expectations Data Docs index, when built


def page_name(day: date) -> str:
    return f"ds={day.isoformat()}.html"


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


def _on(frame: pd.DataFrame, day: date) -> pd.DataFrame:
    return frame[frame["ds"] == day] if not frame.empty else frame


def _env() -> Environment:
    env = Environment(loader=PackageLoader("pipeline.report", "templates"), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "–" if v is None or pd.isna(v) else f"{100 * float(v):.1f}%"
    env.filters["num"] = lambda v, digits=0: "–" if v is None or pd.isna(v) else f"{float(v):,.{digits}f}"
    return env


def _write(path: Path, content: bytes | str) -> None:
    """Write next to the target and rename: a reader never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    os.replace(tmp, path)


class _Site:
    def __init__(self, data: ReportData, out_dir: Path) -> None:
        self.data = data
        self.out = out_dir
        self.env = _env()
        self.counts = _frame(data.table_counts)
        self.quarantine = _frame(data.quarantine)
        self.quality = _frame(data.quality)
        self.entities = _frame(data.entities)
        self.bands = _frame(data.risk_bands)
        self.readmit = _frame(data.readmit)
        self.stages = _frame(data.stages)
        self.drift = _frame(data.drift)
        self.docs = os.path.relpath(data.data_docs, out_dir) if data.data_docs else None

    def image(self, name: str, png: bytes) -> str:
        _write(self.out / IMAGES / name, png)
        return f"{IMAGES}/{name}"

    def rows(self, table: str, day: date) -> int:
        hit = self.counts[(self.counts["table_name"] == table) & (self.counts["ds"] == day)]
        return int(hit["row_count"].sum()) if not hit.empty else 0

    def trailing_median(self, table: str, day: date) -> float | None:
        start = day - timedelta(days=self.data.trailing_days)
        own = self.counts[(self.counts["table_name"] == table) & (self.counts["ds"] >= start)
                          & (self.counts["ds"] < day)]
        return float(own["row_count"].median()) if not own.empty else None

    def notes_on(self, day: date) -> int:
        return self.rows("notes", day) if "notes" in self.data.counted_tables else 0

    # --- one day ---------------------------------------------------------------------------------
    def day_page(self, day: date, neighbours: tuple[date | None, date | None]) -> str:
        stem = f"ds={day.isoformat()}"
        tables = []
        for name in self.data.counted_tables:
            today, median = self.rows(name, day), self.trailing_median(name, day)
            tables.append({"name": name, "rows": today, "median": median,
                           "ratio": today / median if median else None})
        rows_png = self.image(f"{stem}-rows.png", plots.rows_against_median(
            [t["name"] for t in tables], [t["rows"] for t in tables], [t["median"] or 0 for t in tables],
            title=f"rows per table on {day} against the median of the {self.data.trailing_days} days before"))

        quarantine = _on(self.quarantine, day).sort_values(["source_table", "rule"]).to_dict("records")
        quality = _on(self.quality, day).sort_values("table_name").to_dict("records")

        entities = _on(self.entities, day).sort_values("label")
        notes = self.notes_on(day)
        labels = [{"label": r["label"], "n": int(r["n"]), "per_note": r["n"] / notes if notes else None,
                   "negated": r["negated"] / r["n"] if r["n"] else None} for r in entities.to_dict("records")]

        bands = _on(self.bands, day)
        scored = int(bands["n"].sum()) if not bands.empty else 0
        band_rows = [{"band": r["risk_band"], "n": int(r["n"]), "share": r["n"] / scored if scored else None}
                     for r in bands.sort_values("risk_band").to_dict("records")]
        probabilities = _on(self.readmit, day)["readmit_30d_prob"].to_numpy(dtype=float) \
            if not self.readmit.empty else np.array([])
        readmit_png = self.image(f"{stem}-readmit.png", plots.histogram(
            probabilities, title=f"30-day readmission probability, admissions discharged alive on {day}",
            xlabel="readmit_30d_prob"))

        stage_rows = self.stage_times(day)
        stages_png = self.image(f"{stem}-stages.png", plots.horizontal_bars(
            [s["stage"] for s in stage_rows], [s["seconds"] for s in stage_rows], title=f"run time per stage on {day}",
            xlabel="seconds (first start to last finish)",
            colours=[plots.STATUS_COLOURS["ok" if s["status"] == "success" else "fail"] for s in stage_rows]))

        drift = _on(self.drift, day).sort_values("metric").to_dict("records")
        drift_png = self.image(f"{stem}-drift.png", plots.horizontal_bars(
            [d["metric"] for d in drift], [0.0 if pd.isna(d["value"]) else d["value"] / d["threshold"] for d in drift],
            title="PSI against its threshold (1 = the threshold)", xlabel="PSI / threshold",
            colours=[plots.STATUS_COLOURS.get(d["status"], "#9e9e9e") for d in drift]))

        return self.env.get_template("day.html.j2").render(
            day=day, previous=neighbours[0], next=neighbours[1], page_name=page_name, docs=self.docs,
            tables=tables, rows_png=rows_png, quarantine=quarantine, quality=quality, labels=labels, notes=notes,
            bands=band_rows, scored=scored, readmit_png=readmit_png, stages=stage_rows, stages_png=stages_png,
            drift=drift, drift_png=drift_png, alerts=[d for d in drift if d["status"] in DRIFT_ALERTS],
            trailing_days=self.data.trailing_days,
        )

    def stage_times(self, day: date) -> list[dict[str, Any]]:
        """Per stage (mapped parts together: ``ner[part-3]`` counts as ``ner``): first start to last finish."""
        runs = _on(self.stages, day)
        if runs.empty:
            return []
        runs = runs.assign(stage=runs["stage"].str.split("[", n=1, regex=False).str[0])
        grouped = runs.groupby("stage", sort=False).agg(
            started=("started_at", "min"), finished=("finished_at", "max"),
            failed=("status", lambda s: bool((s != "success").any())), parts=("status", "size"))
        out = []
        for stage, r in grouped.sort_values("started").iterrows():
            seconds = (r["finished"] - r["started"]).total_seconds() if pd.notna(r["finished"]) else 0.0
            out.append({"stage": stage, "seconds": max(seconds, 0.0), "started": r["started"],
                        "status": "failed" if r["failed"] else "success", "rows": int(r["parts"])})
        return out

    # --- the index -------------------------------------------------------------------------------
    def index_page(self) -> str:
        first, last = self.data.first, self.data.last
        days = pd.Index([first + timedelta(days=i) for i in range((last - first).days + 1)], name="ds")

        def pivot(frame: pd.DataFrame, columns: str, values: str) -> pd.DataFrame:
            if frame.empty:
                return pd.DataFrame(index=days)
            table = frame[(frame["ds"] >= first) & (frame["ds"] <= last)].pivot_table(
                index="ds", columns=columns, values=values, aggfunc="sum")
            return table.reindex(days)

        counts = pivot(self.counts, "table_name", "row_count")
        inputs = counts.reindex(columns=list(self.data.input_tables)).fillna(0)
        rows_png = self.image("index-rows.png", plots.trend(inputs, title="rows loaded per input table and day",
                                                            ylabel="rows", log_scale=True))
        quarantined = pivot(self.quarantine, "source_table", "n").reindex(columns=list(self.data.input_tables))
        extracted = inputs + quarantined.fillna(0)
        share = (quarantined.fillna(0) / extracted.where(extracted > 0)).dropna(how="all")
        quarantine_png = self.image("index-quarantine.png", plots.trend(
            share.reindex(days), title="quarantined share of extracted rows", ylabel="share"))
        entities = pivot(self.entities, "label", "n")
        notes = counts["notes"] if "notes" in counts else pd.Series(index=days, dtype=float)
        per_note = entities.div(notes.where(notes > 0), axis=0).dropna(how="all").reindex(days)
        entities_png = self.image("index-entities.png", plots.trend(
            per_note, title="entities per note by label", ylabel="entities per note"))
        bands = pivot(self.bands, "risk_band", "n")
        band_share = bands.div(bands.sum(axis=1).where(lambda s: s > 0), axis=0).dropna(how="all").reindex(days)
        bands_png = self.image("index-risk-bands.png", plots.trend(
            band_share, title="admissions per risk band (share of scored)", ylabel="share"))
        drift = self.drift[(self.drift["ds"] >= first) & (self.drift["ds"] <= last)] if not self.drift.empty \
            else self.drift
        ratio = (drift.assign(ratio=drift["value"] / drift["threshold"]).pivot_table(
            index="ds", columns="metric", values="ratio", aggfunc="max").reindex(days)
            if not drift.empty else pd.DataFrame(index=days))
        drift_png = self.image("index-drift.png", plots.trend(
            ratio, title="drift: PSI against its threshold per metric", ylabel="PSI / threshold", threshold=1.0))

        summary = []
        for day in sorted(self.data.page_days, reverse=True):
            on_day = _on(drift, day) if not drift.empty else drift
            quality = _on(self.quality, day)
            summary.append({
                "day": day, "page": page_name(day),
                "rows": {t: self.rows(t, day) for t in self.data.input_tables},
                "quarantined": int(_on(self.quarantine, day)["n"].sum()) if not self.quarantine.empty else 0,
                "pass_rate": quality["pass_rate"].min() if not quality.empty else None,
                "drifted": sorted(on_day[on_day["status"].isin(DRIFT_ALERTS)]["metric"]) if not on_day.empty else [],
            })
        return self.env.get_template("index.html.j2").render(
            first=first, last=last, docs=self.docs, summary=summary, input_tables=self.data.input_tables,
            plots=[rows_png, quarantine_png, entities_png, bands_png, drift_png],
        )


def write_site(data: ReportData, out_dir: Path, *, pages_from: date) -> Path:
    """Write the day pages of the page days from ``pages_from`` on, and the index; returns the index's path."""
    site = _Site(data, out_dir)
    days = sorted(data.page_days)
    for i, day in enumerate(days):
        if day < pages_from:
            continue
        neighbours = (days[i - 1] if i else None, days[i + 1] if i + 1 < len(days) else None)
        _write(out_dir / page_name(day), site.day_page(day, neighbours))
    index = out_dir / "index.html"
    _write(index, site.index_page())
    return index
