"""History backfill benchmark: the structured seed of a generated year at 1× and N× size, in bounded memory.

    ehr-pipeline bench backfill [--patients 10000] [--factor 4] [--chunk month] [--chunk-rows N] [--ner-model PATH]

Generates two MIMIC-IV-style sources of one year (``--patients`` and ``--factor`` × as many patients, same
seed), then runs ``ehr-pipeline backfill --bulk`` (the structured stages: one pass staging the source, then
chunks (a month by default, cut by the row budget ``--chunk-rows``) extracted, validated and loaded into DuckDB; no
NER, no risk) on each in a child process, which reports its wall time, its chunks, its largest chunk and its peak RSS
(``getrusage``): with the row budget, the largest chunk, not the source, is what memory follows. The rows per second of the larger run project the time
for MIMIC-IV ``hosp``'s row counts. NER on history is measured apart: the backfill's NER stage
(:func:`pipeline.tasks.backfill.ner_chunk`) over one week of the 1× history, with the model of ``--ner-model``
(or, when none is given, one fine-tuned briefly here: throughput depends on the architecture, not the
training), giving notes per second and the projected hours for MIMIC-IV-Note's discharge notes; ``ner_days=0``
skips it and keeps the NER paragraph the section already has.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipeline.bench.sections import replace_section

SECTION = "## History backfill"
SOURCE_START = date(2026, 1, 1)  # the generated window is the year before it (plus this day)
HISTORY_DAYS = 365
# MIMIC-IV hosp row counts the issue compares against (v2.2): labevents, prescriptions, diagnoses_icd, admissions
MIMIC_HOSP_ROWS = {"labs": 118_000_000, "prescriptions": 15_000_000, "diagnoses": 4_800_000, "admissions": 431_000}
MIMIC_DISCHARGE_NOTES = 331_794
MEDS_MINUTES, MEDS_PEAK_GB = 32, 20.3


def _child(workdir: Path, source: Path, start: date, end: date, chunk: str = "month",
           chunk_rows: int | None = None) -> dict[str, Any]:
    """Run the structured backfill in this (child) process; wall time, peak RSS, rows and chunks."""
    import resource

    from pipeline.config import load_settings
    from pipeline.tasks import backfill

    budget = {"backfill_chunk_rows": chunk_rows} if chunk_rows else {}
    settings = load_settings(workdir=workdir, source_path=source, **budget)
    t0 = time.perf_counter()
    backfill.stage_source(settings)
    staged = time.perf_counter() - t0
    _, outcome = backfill.run_backfill(start, end, settings=settings, chunk=chunk, skip_ner=True, skip_risk=True)
    seconds = time.perf_counter() - t0
    rows = sum(c.rows for c in outcome.chunks)
    return {"seconds": seconds, "staging_seconds": staged, "rows": rows, "chunks": len(outcome.chunks),
            "largest_chunk_rows": max((c.rows for c in outcome.chunks), default=0),
            "chunk_rows": settings.backfill_chunk_rows, "failed": [str(c.chunk) for c in outcome.failed],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _run_child(workdir: Path, source: Path, start: date, end: date, chunk: str,
               chunk_rows: int | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pipeline.bench.backfill", str(workdir), str(source), start.isoformat(),
           end.isoformat(), chunk, str(chunk_rows or 0)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"backfill benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _warehouse_rows(workdir: Path) -> dict[str, int]:
    from pipeline.warehouse import open_warehouse

    with open_warehouse(f"duckdb:///{workdir / 'warehouse.duckdb'}") as wh:
        return {t: wh.query(f"SELECT count(*) AS n FROM ehr.{t}").column("n")[0].as_py()
                for t in ("admissions", "diagnoses", "labs", "prescriptions", "notes", "patients", "quarantine")}


def _ner_rate(workdir: Path, source: Path, model_dir: Path | None, days: int) -> dict[str, Any]:
    """The backfill's NER stage over ``days`` days of the seeded history."""
    import pyarrow.compute as pc

    from pipeline import lake
    from pipeline.config import load_settings
    from pipeline.tasks import backfill

    if model_dir is None:
        from pipeline.nlp.train import train_ner
        from pipeline.synth.notes import training_notes

        model_dir = workdir / "ner-model"
        if not (model_dir / "config.json").is_file():
            train_ner(model_dir, training_notes(40, 13), corpus="pipeline.synth.notes.training_notes(40, seed=13)",
                      epochs=1, seed=13)
        trained_here = True
    else:
        trained_here = False
    settings = load_settings(workdir=workdir, source_path=source, ner_model_path=model_dir, device="cpu")
    end = SOURCE_START - timedelta(days=1)
    chunk = backfill.Chunk(end - timedelta(days=days - 1), end)
    chars = 0
    for day in chunk.days:
        notes = lake.read_partition(settings.lake_dir, "validated", "notes", day)
        chars += int(pc.sum(pc.utf8_length(notes.column("text"))).as_py() or 0)
    t0 = time.perf_counter()
    counts = backfill.ner_chunk(chunk, run_id=f"bench__{chunk.start}", settings=settings)
    seconds = time.perf_counter() - t0
    import torch

    return {"notes": counts["notes"], "entities": counts["entities"], "seconds": seconds, "chars": chars,
            "model": str(model_dir), "trained_here": trained_here, "threads": torch.get_num_threads(),
            "chunk": str(chunk)}


def run_backfill_benchmark(patients: int = 10_000, factor: int = 4, *, workdir: Path, ner_model: Path | None = None,
                           ner_days: int = 7, chunk: str = "month", chunk_rows: int | None = None,
                           out_md: Path = Path("BENCHMARKS.md"), log: Any = print) -> dict[str, Any]:
    from pipeline.synth import generate

    start, end = SOURCE_START - timedelta(days=HISTORY_DAYS), SOURCE_START - timedelta(days=1)
    runs = []
    for n in (patients, patients * factor):
        source = workdir / f"source-{n}"
        if not (source / "hosp").is_dir():
            log(f"generating {n} patients over {HISTORY_DAYS} days")
            t0 = time.perf_counter()
            generate(source, patients=n, start=SOURCE_START, days=1, history_days=HISTORY_DAYS, seed=7)
            log(f"  {time.perf_counter() - t0:.0f} s")
        run_dir = workdir / f"run-{n}"
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        load = [round(x, 2) for x in os.getloadavg()]
        log(f"backfill --bulk --chunk {chunk} {start}..{end} of {n} patients (load average {load})")
        result = _run_child(run_dir, source, start, end, chunk, chunk_rows)
        result.update(patients=n, loaded=_warehouse_rows(run_dir), load=load)
        log(f"  {json.dumps(result)}")
        runs.append(result)
    ner = None
    if ner_days:
        log(f"NER over {ner_days} days of history")
        ner = _ner_rate(workdir / f"run-{patients}", workdir / f"source-{patients}", ner_model, ner_days)
        log(f"  {json.dumps(ner)}")
    summary = {"runs": runs, "ner": ner, "start": start.isoformat(), "end": end.isoformat(), "chunk": chunk,
               "chunk_rows": runs[0]["chunk_rows"], "ner_model": str(ner_model) if ner_model and ner_days else None}
    kept = None if ner else _kept_ner_paragraph(out_md)
    replace_section(out_md, _section(summary, patients, factor, ner_days, kept))
    return summary


def _kept_ner_paragraph(out_md: Path) -> list[str] | None:
    """The NER lines the section has now (kept when this run does not measure NER)."""
    if not out_md.is_file():
        return None
    text = out_md.read_text(encoding="utf-8")
    if SECTION not in text:
        return None
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0].splitlines()
    lines = [line for line in body if line.startswith(("NER on history", "- GPU"))]
    return lines or None


def _section(s: dict[str, Any], patients: int, factor: int, ner_days: int,
             kept_ner: list[str] | None = None) -> str:
    small, large = s["runs"]
    rss_ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    time_ratio = large["seconds"] / small["seconds"]
    rate = large["rows"] / large["seconds"]
    mimic_rows = sum(MIMIC_HOSP_ROWS.values())
    projected_min = mimic_rows / rate / 60
    cpu = platform.processor() or platform.machine()
    budget = s["chunk_rows"]
    load = "load average (1, 5, 15 min) at the start of each run: " + "; ".join(
        f"{r['patients']:,} patients {', '.join(f'{x:.2f}' for x in r['load'])}" for r in (small, large))
    lines = [
        SECTION,
        "",
        f"Reproduce: `ehr-pipeline bench backfill --patients {patients} --factor {factor} --chunk {s['chunk']} "
        f"--chunk-rows {budget} --ner-days {ner_days}"
        + (f" --ner-model {s['ner_model']}" if s.get("ner_model") else "") + "` (calls "
        "`pipeline.bench.backfill.run_backfill_benchmark`). Measured "
        f"{date.today().isoformat()} on {cpu}, {os.cpu_count()} cores **shared with other jobs running at the same "
        f"time** ({load}; the wall times are upper bounds). Generated MIMIC-IV-style "
        f"sources of one year ({s['start']}..{s['end']}), seed 7; the structured seed `backfill --bulk` (source "
        "staged in one pass, then chunks "
        f"(`--chunk {s['chunk']}`, cut at {budget:,} rows, `EHR_BACKFILL_CHUNK_ROWS`) extracted, validated and loaded "
        "into DuckDB; no NER, no risk), each in its own child process, one run each; peak RSS is the child's "
        "(staging included).",
        "",
        "| source | rows extracted | chunks (largest, rows) | wall s (staging s) | rows/s | peak RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in (small, large):
        lines.append(f"| {r['patients']:,} patients | {r['rows']:,} | {r['chunks']} ({r['largest_chunk_rows']:,}) | "
                     f"{r['seconds']:.0f} ({r['staging_seconds']:.0f}) | {r['rows'] / r['seconds']:,.0f} | "
                     f"{r['peak_rss_mb']:,.0f} MB |")
    ok_time = time_ratio <= 1.1 * factor
    lines += [
        "",
        f"- Peak RSS {factor}× / 1×: **{rss_ratio:.2f}** (target ≤ 1.15: {'met' if rss_ratio <= 1.15 else 'NOT met'}); "
        f"peak at {factor}×: {large['peak_rss_mb']:,.0f} MB (target ≤ 3 GB: "
        f"{'met' if large['peak_rss_mb'] <= 3072 else 'NOT met'}).",
        f"- Wall time {factor}× / 1×: **{time_ratio:.2f}** for {large['rows'] / small['rows']:.2f}× the rows "
        f"(target ≤ {1.1 * factor:.1f}: {'met' if ok_time else 'NOT met'}).",
        f"- Loaded ({factor}×): " + ", ".join(f"{k} {v:,}" for k, v in large["loaded"].items()) + ".",
        f"- Projection for MIMIC-IV `hosp` ({mimic_rows / 1e6:.1f} M rows: 118 M labevents, 15 M prescriptions, "
        f"4.8 M diagnoses, 431 k admissions) at the {factor}× rate: **{projected_min:,.0f} minutes** "
        f"({projected_min / 60:.1f} h). The row budget bounds each chunk's rows ({budget:,} whatever the "
        "source's size; a calendar chunk with fewer rows stays whole, so the 1× source's chunks are smaller than "
        "the budget when its months are); whether peak memory follows the chunk and not the source is what the "
        "ratio above tests. MEDS-Transforms' published figure for "
        f"all of MIMIC-IV is {MEDS_MINUTES} minutes at {MEDS_PEAK_GB} GB peak memory, on other hardware and "
        "producing a different output (MEDS shards, no validation or warehouse load), so the comparison is of "
        "orders of magnitude only.",
        "",
    ]
    ner = s.get("ner")
    if ner:
        notes_per_s = ner["notes"] / ner["seconds"]
        hours = MIMIC_DISCHARGE_NOTES / notes_per_s / 3600
        lines += [
            f"NER on history: the backfill's NER stage over {ner_days} days ({ner['chunk']}) of the 1× history, "
            f"CPU fp32, {ner['threads']} torch threads: {ner['notes']:,} notes ({ner['chars']:,} characters), "
            f"{ner['entities']:,} entities in {ner['seconds']:.0f} s = **{notes_per_s:.2f} notes/s** "
            f"({ner['chars'] / ner['seconds']:,.0f} characters/s). MIMIC-IV-Note's {MIMIC_DISCHARGE_NOTES:,} "
            f"discharge notes at that rate: **{hours:,.1f} hours** on this CPU (generated notes are shorter than "
            "real discharge summaries; scale by characters for a closer figure). This is the stage as a backfill "
            f"runs it: one call per day's notes part ({ner['notes'] / ner_days:.0f} notes a day here), the model "
            "and the ConText pipeline loaded once per process; the NER section above measures the steady-state rate."
            + (f" Model: `{ner['model']}`." if not ner["trained_here"] else "")
            + (" The model was fine-tuned briefly by the benchmark (the packaged MiniLM-L6 architecture: the "
               "transformer's speed does not depend on how well it was trained; a model that finds few entities "
               "spends less time in ConText)." if ner["trained_here"] else ""),
            "- GPU: not measured here (no GPU on this machine). On a CUDA worker the NER tasks run with fp16/bf16 "
            "autocast (`EHR_NER_PRECISION=auto`) and chunks run in parallel on the `gpu` pool (the `ehr_history` "
            "DAG), which is where the hours above would shrink; by how much is unmeasured.",
        ]
    elif kept_ner:
        lines += ["(NER on history not measured by this run, `--ner-days 0`; the figure below is from the earlier "
                  "run of this section.)", "", *kept_ner]
    else:
        lines.append("NER on history: not measured (`--ner-days 0`).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the child process of _run_child
    print(json.dumps(_child(Path(sys.argv[1]), Path(sys.argv[2]), date.fromisoformat(sys.argv[3]),
                            date.fromisoformat(sys.argv[4]), sys.argv[5], int(sys.argv[6]) or None)))
