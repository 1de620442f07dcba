"""``ehr-pipeline``: the command line. It calls the same task functions as the Airflow DAG."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pipeline import airflow_local
from pipeline.airflow_local import DEMO_START
from pipeline.cli_errors import HandledGroup
from pipeline.config import ConfigError, Settings, load_settings

# known errors (bad data, a stage that cannot go on, source, settings) print one line; see cli_errors
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, cls=HandledGroup,
                  pretty_exceptions_show_locals=False)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks; results go to BENCHMARKS.md.")
app.add_typer(bench_app, name="bench")
console = Console(stderr=False)
err = Console(stderr=True)

# The demo's PHI tagger: fewer steps than `train-phi`'s default to keep the demo short (BENCHMARKS.md has both).

WorkdirOpt = Annotated[Path | None, typer.Option("--workdir", help="Working directory (default .ehr or EHR_WORKDIR).")]


def _settings(workdir: Path | None = None, **overrides: Any) -> Settings:
    if workdir is not None:
        overrides["workdir"] = workdir
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is logged (a test runner swaps it per command)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("EHR_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s %(message)s",
                        handlers=[_CurrentStderr()])
    for noisy in ("PyRuSH", "medspacy", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)


@contextmanager
def _progress_if_any(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress callback whose bar appears on its first call: nothing is shown when no work is done."""
    progress: Progress | None = None
    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal progress, bar
        if progress is None:
            progress = _progress()
            progress.start()
            bar = progress.add_task(description, total=total)
        progress.update(bar, completed=done, total=total)

    try:
        yield update
    finally:
        if progress is not None:
            progress.stop()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of known errors too (or EHR_DEBUG=1).")] = False,
) -> None:
    _setup_logging()


# --- data ---------------------------------------------------------------------------------------
@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    layout: Annotated[str, typer.Option(help="mimic4 or mimic3.")] = "mimic4",
    patients: Annotated[int, typer.Option(min=1)] = 500,
    start: Annotated[str, typer.Option(help="First demo day (YYYY-MM-DD).")] = DEMO_START.isoformat(),
    days: Annotated[int, typer.Option(min=1)] = 3,
    history_days: Annotated[int, typer.Option(min=0, help="Days of history before --start.")] = 365,
    seed: Annotated[int, typer.Option()] = 7,
    messy: Annotated[bool, typer.Option(help="Plant realistic defects (mangled timestamps, orphan and oversized rows).")] = False,
    shift_day: Annotated[str | None, typer.Option(
        help="Plant a shift in the admission mix on this day (YYYY-MM-DD), for drift checks.")] = None,
    shift_emergency_share: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of emergency admissions on --shift-day (usually about 0.87).")] = 0.4,
    modules: Annotated[str, typer.Option(
        help="Release modules to write, comma-separated: hosp (always), icu, note. 'hosp' alone is a hosp-only "
             "source like the open MIMIC-IV demo.")] = "hosp,icu,note",
    radiology: Annotated[bool, typer.Option(help="Also write radiology reports (note/radiology.csv.gz).")] = False,
) -> None:
    """Generate a synthetic MIMIC-style dataset (deterministic per seed)."""
    from pipeline.synth import generate as run_generate
    from pipeline.synth.generate import MODULES

    if layout not in ("mimic4", "mimic3"):
        raise typer.BadParameter("layout must be mimic4 or mimic3", param_hint="--layout")
    first = _parse_day(start, "--start")
    planted = _parse_day(shift_day, "--shift-day") if shift_day else None
    chosen = tuple(dict.fromkeys(m.strip().lower() for m in modules.split(",") if m.strip()))
    if "hosp" not in chosen or set(chosen) - set(MODULES):
        raise typer.BadParameter(f"{modules!r}: a comma-separated list of {', '.join(MODULES)} that includes hosp",
                                 param_hint="--modules")
    with _progress() as progress:
        task = progress.add_task("generating patients", total=patients)
        summary = run_generate(
            out, layout=layout, patients=patients, start=first, days=days,
            history_days=history_days, seed=seed, messy=messy, shift_day=planted,
            shift_emergency_share=shift_emergency_share, modules=chosen, radiology=radiology,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    console.print(f"wrote {out}: {json.dumps(_summary_counts(summary))}")


def _summary_counts(summary: Any) -> dict[str, Any]:
    counts = getattr(summary, "counts", None)
    return dict(counts) if counts else {}


def _parse_day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option) from None


@app.command()
def run(
    ds: Annotated[str, typer.Option("--ds", help="The day to process (YYYY-MM-DD).")],
    workdir: WorkdirOpt = None,
    skip_ner: Annotated[bool, typer.Option(help="Skip the NER stage.")] = False,
    skip_risk: Annotated[bool, typer.Option(help="Skip the risk stage.")] = False,
) -> None:
    """Run every stage for one day, outside the scheduler (same functions as the DAG)."""
    from pipeline.tasks import nightly

    settings = _settings(workdir)
    day = _parse_day(ds, "--ds")
    with console.status(f"{day}: starting") as status:
        summary = nightly.run_day(day, settings=settings, ner_enabled=not skip_ner, risk_enabled=not skip_risk,
                                on_step=lambda name: status.update(f"{day}: {name}"))
    _print_day(summary)


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last day, inclusive.")],
    workdir: WorkdirOpt = None,
    chunk: Annotated[str | None, typer.Option(
        help="Chunk size: month, week or N days (default EHR_BACKFILL_CHUNK, month).")] = None,
    reprocess: Annotated[str, typer.Option(
        help="What already done is run again: missing (default: never done, failed, skipped or with a redone "
             "input), failed, stale (also made by another code/rules/model version), all.")] = "missing",
    skip_ner: Annotated[bool, typer.Option(help="No NER (a structured-only seed; recorded as skipped).")] = False,
    skip_risk: Annotated[bool, typer.Option(help="No risk scores (e.g. no risk model yet; recorded as skipped).")] = False,
    dry_run: Annotated[bool, typer.Option(help="List the chunks and stages that would run, run nothing.")] = False,
    bulk: Annotated[bool, typer.Option(
        help="Alias of --skip-ner --skip-risk: a structured-only seed of history.")] = False,
    daily: Annotated[bool, typer.Option(
        help="Run the nightly DAG's stages day by day instead (with the per-day report; short ranges).")] = False,
) -> None:
    """Backfill a range: the source read once, then chunks extracted, validated, enriched and loaded.

    Resumable: a rerun skips what is done (see --reprocess). Exits 1 listing the chunks that failed.
    """
    from pipeline.tasks import backfill as history_backfill
    from pipeline.tasks import nightly

    settings = _settings(workdir)
    first, last = _parse_day(start, "--start"), _parse_day(end, "--end")
    if last < first:
        raise typer.BadParameter("--end is before --start", param_hint="--end")
    if daily:
        all_days = nightly.days(first, last)
        with _progress() as progress:
            # every day extracted and validated first, then enriched, loaded and reported (order-independent risk)
            bar = progress.add_task("days", total=2 * len(all_days))

            def step(day: date, name: str) -> None:
                progress.update(bar, description=f"{day} {name}")
                if name in ("validate", "report"):
                    progress.advance(bar)

            nightly.run_days(all_days, settings=settings, on_step=step)
        console.print(f"run report: {settings.reports_dir / 'index.html'}", soft_wrap=True)
        return
    if reprocess not in history_backfill.REPROCESS_MODES:
        raise typer.BadParameter(f"expected one of {', '.join(history_backfill.REPROCESS_MODES)}",
                                 param_hint="--reprocess")
    skip_ner, skip_risk = skip_ner or bulk, skip_risk or bulk
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} chunks"),
                        TextColumn("{task.fields[rows]:,} rows"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    state: dict[str, Any] = {"rows": 0}

    def on_plan(work: list) -> None:
        todo = [w for w in work if w.stages]
        if dry_run:
            table = Table(title=f"backfill {first}..{last}: {len(todo)} of {len(work)} chunks to run")
            for column in ("chunk", "stages", "why"):
                table.add_column(column)
            for w in work:
                why = "; ".join(f"{s}: {r}" for s, r in w.reasons.items() if s == w.stages[0]) if w.stages else "done"
                table.add_row(str(w.chunk), " ".join(w.stages) or "-", why)
            console.print(table)
            return
        progress.start()
        state["bar"] = progress.add_task("chunks", total=len(todo), rows=0)

    def on_stage(item: Any, stage: str) -> None:
        progress.update(state["bar"], description=f"{item} {stage}")

    def on_chunk(result: Any) -> None:
        if result.stages:
            state["rows"] += result.rows
            progress.update(state["bar"], advance=1, rows=state["rows"])

    try:
        _, outcome = history_backfill.run_backfill(
            first, last, settings=settings, chunk=chunk, reprocess=reprocess, skip_ner=skip_ner,
            skip_risk=skip_risk, dry_run=dry_run, on_plan=on_plan, on_stage=on_stage, on_chunk=on_chunk)
    except history_backfill.BackfillError as exc:
        err.print(f"[red]backfill:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        progress.stop()
    if dry_run:
        return
    ran = [c for c in outcome.chunks if c.stages]
    console.print(f"backfill {first}..{last}: {len(ran) - len(outcome.failed)} chunk(s) done, "
                  f"{len(outcome.chunks) - len(ran)} already done, {len(outcome.failed)} failed")
    if outcome.failed:
        for failed in outcome.failed:
            err.print(f"[red]failed[/red] {failed.chunk}: {failed.error}", soft_wrap=True)
        err.print("rerun the same command (or --reprocess failed) once the cause is fixed")
        raise typer.Exit(1)


@bench_app.command("backfill")
def bench_backfill(
    patients: Annotated[int, typer.Option(min=10, help="Patients of the 1x source (one year).")] = 10_000,
    factor: Annotated[int, typer.Option(min=2, help="Size of the larger source, in multiples of the 1x one.")] = 4,
    ner_model: Annotated[Path | None, typer.Option(
        help="NER model for the history-NER rate (default: one fine-tuned briefly by the benchmark).")] = None,
    ner_days: Annotated[int, typer.Option(
        min=0, help="Days of history the NER rate is measured on (0: not measured; the section keeps the "
                    "NER figure it has).")] = 7,
    chunk: Annotated[str, typer.Option(help="Chunk size of both backfills (month, week, N days).")] = "month",
    chunk_rows: Annotated[int | None, typer.Option(
        min=1, help="Row budget of a chunk in both backfills (default: EHR_BACKFILL_CHUNK_ROWS's default).")] = None,
    workdir: Annotated[Path, typer.Option(help="Scratch folder (sources are kept for reruns).")] = Path(".ehr/bench-backfill"),
    out: Annotated[Path, typer.Option(help="Markdown file to update.")] = Path("BENCHMARKS.md"),
) -> None:
    """History backfill at 1x and Nx: peak RSS, wall time, rows/s, MIMIC-IV projections, NER notes/s."""
    from pipeline.bench.backfill import run_backfill_benchmark

    workdir.mkdir(parents=True, exist_ok=True)
    run_backfill_benchmark(patients, factor, workdir=workdir.resolve(), ner_model=ner_model, ner_days=ner_days,
                           chunk=chunk, chunk_rows=chunk_rows, out_md=out, log=console.print)
    console.print(f"updated {out}")


# --- warehouse ---------------------------------------------------------------------------------------
def _counts_table(settings: Settings, first: date | None = None, last: date | None = None) -> Table:
    from pipeline.contracts import INPUT_TABLES
    from pipeline.warehouse import open_warehouse

    shown = (*INPUT_TABLES, "note_entities", "admission_risk", "quarantine", "validation_results", "pipeline_runs")
    with open_warehouse(settings.warehouse) as wh:
        rows = wh.counts_by_day(shown).to_pylist()
    by_day: dict[date, dict[str, int]] = {}
    for r in rows:
        if (first and r["ds"] < first) or (last and r["ds"] > last):
            continue
        by_day.setdefault(r["ds"], {})[r["table_name"]] = r["row_count"]
    table = Table(title=f"warehouse rows per table and day ({settings.warehouse.split('://')[0]})")
    table.add_column("table")
    all_days = sorted(by_day)
    for day in all_days:
        table.add_column(day.isoformat(), justify="right")
    for name in shown:
        table.add_row(f"ehr.{name}", *[str(by_day[day].get(name, 0)) for day in all_days])
    return table


@app.command()
def counts(workdir: WorkdirOpt = None, start: str | None = None, end: str | None = None) -> None:
    """Print warehouse row counts per table and day."""
    settings = _settings(workdir)
    console.print(_counts_table(settings, _parse_day(start, "--start") if start else None,
                                _parse_day(end, "--end") if end else None))


@app.command()
def report(
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last day, inclusive; the index shows trends up to it.")],
    workdir: WorkdirOpt = None,
) -> None:
    """Rebuild the run report (<workdir>/reports/) for a range of days from the warehouse alone.

    The drift metrics of every loaded day in the range are computed again (and replaced in ehr.drift_metrics),
    then the day pages of the range and the index are written.
    """
    from pipeline.tasks import reporting
    from pipeline.tasks.runs import new_run_id

    settings = _settings(workdir)
    first, last = _parse_day(start, "--start"), _parse_day(end, "--end")
    if last < first:
        raise typer.BadParameter("--end is before --start", param_hint="--end")
    with console.status(f"building the run report for {first}..{last}"):
        index = reporting.rebuild(settings, first, last, run_id=new_run_id(last, "report"))
    console.print(f"run report: {index}", soft_wrap=True)  # one line, whatever the width: people copy it


@app.command("init-warehouse")
def init_warehouse(workdir: WorkdirOpt = None) -> None:
    """Create schema ehr, its tables and views in the configured warehouse."""
    from pipeline.warehouse import open_warehouse

    settings = _settings(workdir)
    with open_warehouse(settings.warehouse) as wh:
        wh.ensure_schema()
    console.print("warehouse ready")


@app.command("grant-analyst")
def grant_analyst(role: Annotated[str, typer.Option()] = "ehr_analyst", workdir: WorkdirOpt = None) -> None:
    """PostgreSQL: create the read-only analyst role with grants on schema ehr and its views."""
    from pipeline.warehouse.grants import grant_analyst_role

    settings = _settings(workdir)
    if not settings.warehouse.startswith("postgres"):
        raise typer.BadParameter("needs a PostgreSQL warehouse (EHR_WAREHOUSE_URL=postgresql://...)")
    grant_analyst_role(settings.warehouse, role=role)
    console.print(f"role {role} can read schema ehr")


# --- models -------------------------------------------------------------------------------------
@app.command("train-ner")
def train_ner(
    workdir: WorkdirOpt = None,
    out: Annotated[Path | None, typer.Option(help="Model folder (default: EHR_NER_MODEL_PATH or <workdir>/models/ner).")] = None,
    notes: Annotated[int, typer.Option(min=1, help="Synthetic training notes (the train split).")] = 600,
    clinic_notes: Annotated[int, typer.Option(min=0, help="Synthetic clinic notes in shorthand (train split) "
                                              "added to the discharge summaries.")] = 300,
    eval_notes: Annotated[int, typer.Option(min=0, help="Held-out notes for the model card's metrics (0: none).")] = 200,
    steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps, fixed (default: the demo model's "
                                              "schedule; the machine's load never changes it).")] = None,
    seed: Annotated[int, typer.Option()] = 13,
    real: Annotated[Path | None, typer.Option(
        "--real", help="Anafora folder of real notes to measure the model on for its card (never trained on; default: "
        "the vendored tests/fixtures/ctakes-dev when present).")] = None,
) -> None:
    """Fine-tune the packaged MiniLM-L6 encoder for PROBLEM/TREATMENT/TEST on generated notes (a fixed schedule)."""
    from pipeline.nlp.train import DEFAULT_FROZEN_LAYERS, DEFAULT_STEPS
    from pipeline.nlp.train import train_ner as run_train
    from pipeline.synth.clinic import clinic_notes as make_clinic_notes
    from pipeline.synth.notes import held_out_notes, training_notes

    settings = _settings(workdir)
    target = out or settings.ner_model_dir
    train = training_notes(notes, seed) + (make_clinic_notes(clinic_notes, seed) if clinic_notes else [])
    from pipeline.config import REPO_ROOT
    from pipeline.nlp.anafora import read_anafora_dir

    vendored = REPO_ROOT / "tests" / "fixtures" / "ctakes-dev"
    real_dir = real or (vendored if vendored.is_dir() else None)
    real_notes = read_anafora_dir(real_dir) if real_dir is not None else None
    corpus = f"pipeline.synth.notes.training_notes({notes}, seed={seed})" + (
        f" + pipeline.synth.clinic.clinic_notes({clinic_notes}, seed={seed})" if clinic_notes else "")
    with _progress() as progress:
        bar = progress.add_task("training NER", total=None)
        metrics = run_train(
            target, train, eval_notes=held_out_notes(eval_notes, seed + 1) if eval_notes else None,
            corpus=corpus, steps=steps or DEFAULT_STEPS, real_eval_notes=real_notes,
            real_eval_name=str(real_dir) if real_dir is not None else "",
            seed=seed, frozen_layers=DEFAULT_FROZEN_LAYERS,
            progress=lambda done, total, *_: progress.update(bar, completed=done, total=total),
        )
    console.print(f"saved {target}")
    console.print_json(json.dumps(metrics, default=str))


@app.command("eval-ner")
def eval_ner(
    workdir: WorkdirOpt = None,
    model: Annotated[Path | None, typer.Option(help="Model folder.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    notes: Annotated[int, typer.Option(help="Held-out notes to evaluate on.")] = 300,
    real: Annotated[Path | None, typer.Option(
        "--real", help="Score on an Anafora-annotated folder of real notes instead (one folder per note).")] = None,
    rules: Annotated[bool, typer.Option(help="Run the rule layer after the model, as the NER stage does.")] = True,
) -> None:
    """Precision/recall/F1 and assertion accuracy on the held-out template/term split (or real notes: --real)."""
    from pipeline.nlp.train import evaluate_ner

    settings = _settings(workdir)
    if real is not None:
        from pipeline.nlp.anafora import AnaforaError, read_anafora_dir

        try:
            gold = read_anafora_dir(real)
        except AnaforaError as exc:
            raise typer.BadParameter(str(exc), param_hint="--real") from exc
        title = f"NER on {len(gold)} annotated real notes ({real})"
    else:
        from pipeline.synth.notes import held_out_notes

        gold = held_out_notes(notes)
        title = "NER on the held-out split (unseen templates and terms)"
    result = evaluate_ner(model or settings.ner_model_dir, gold, rules=rules)
    if as_json:
        print(json.dumps(result, default=str))
        return
    table = Table(title=title)
    for col in ("label", "exact P", "exact R", "exact F1", "overlap P", "overlap R", "overlap F1", "negation acc"):
        table.add_column(col)
    for label, m in result.get("per_label", {}).items():
        scores = (m["exact"]["precision"], m["exact"]["recall"], m["exact"]["f1"],
                  m["overlap"]["precision"], m["overlap"]["recall"], m["overlap"]["f1"])
        negation = result["assertion_per_label"][label]["is_negated"]
        table.add_row(label, *(f"{score:.3f}" for score in scores), "-" if negation is None else f"{negation:.3f}")
    console.print(table)
    per_flag = "  ".join(f"{flag.removeprefix('is_')} {acc:.3f}" for flag, acc in result["assertion_per_flag"].items())
    console.print(f"exact F1 {result['exact_f1']:.3f}  overlap F1 {result['overlap_f1']:.3f}  "
                  f"assertion accuracy {result['assertion_accuracy']:.3f}  per flag: {per_flag}")


@app.command("annotate")
def annotate_cmd(
    paths: Annotated[list[str], typer.Argument(help="Text files, folders (their *.txt files) or - for stdin.")],
    workdir: WorkdirOpt = None,
    output_format: Annotated[str, typer.Option("--format", help="jsonl (one entity per line), parquet or table.")] = "jsonl",
    out: Annotated[Path | None, typer.Option(help="Output file (needed for parquet; default stdout).")] = None,
    model: Annotated[Path | None, typer.Option(help="Model folder (default: EHR_NER_MODEL_PATH).")] = None,
) -> None:
    """Entities, assertion flags and sections of any text with the configured NER model (pipeline.nlp.annotate)."""
    import sys

    output_format = output_format.lower()
    if output_format not in ("jsonl", "parquet", "table"):
        raise typer.BadParameter("use jsonl, parquet or table", param_hint="--format")
    if output_format == "parquet" and out is None:
        raise typer.BadParameter("parquet needs --out FILE", param_hint="--out")
    docs: list[tuple[str, str]] = []
    for raw in paths:
        if raw == "-":
            docs.append(("-", sys.stdin.read()))
            continue
        path = Path(raw)
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        if not path.exists():
            raise typer.BadParameter(f"{path} does not exist", param_hint="PATHS")
        for file in files:
            try:
                docs.append((str(file), file.read_text(encoding="utf-8")))
            except UnicodeDecodeError as exc:
                raise typer.BadParameter(f"{file} is not UTF-8 text ({exc.reason})", param_hint="PATHS") from None
    if not docs:
        raise typer.BadParameter("no text files found", param_hint="PATHS")
    from pipeline.nlp.api import annotate, annotations_table

    overrides = {"ner_model_path": model} if model is not None else {}
    settings = _settings(workdir, **overrides)
    if not settings.ner_model_dir.is_dir():
        err.print(f"[red]no NER model at {settings.ner_model_dir}[/red]: train one with `ehr-pipeline train-ner` "
                  "or set EHR_NER_MODEL_PATH (or --model)")
        raise typer.Exit(2)
    entities = annotate([text for _, text in docs], settings=settings)
    table = annotations_table([doc for doc, _ in docs], entities)
    if output_format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, out)
        err.print(f"{table.num_rows} entities from {len(docs)} document(s) written to {out}")
        return
    if output_format == "jsonl":
        lines = "".join(json.dumps(row) + "\n" for row in table.to_pylist())
        if out is None:
            sys.stdout.write(lines)
        else:
            out.write_text(lines)
            err.print(f"{table.num_rows} entities from {len(docs)} document(s) written to {out}")
        return
    view = Table(title=f"{table.num_rows} entities in {len(docs)} document(s)")
    for col in ("doc", "span", "text", "label", "flags", "section"):
        view.add_column(col)
    for row in table.to_pylist():
        flags = ",".join(f.removeprefix("is_") for f in ("is_negated", "is_uncertain", "is_historical", "is_family",
                                                          "is_hypothetical") if row[f])
        view.add_row(row["doc"], f"{row['start_char']}-{row['end_char']}", row["text"], row["label"], flags,
                     row["section"] or "")
    Console(file=out.open("w") if out else None, width=160).print(view)


@app.command("train-risk")
def train_risk(workdir: WorkdirOpt = None, out: Annotated[Path | None, typer.Option()] = None) -> None:
    """Train the calibrated readmission / mortality model on the warehouse history."""
    from pipeline.tasks import history

    settings = _settings(workdir)
    with console.status("training the risk model"):
        metrics = history.train_risk_model(settings, out or settings.risk_model_dir)
    console.print_json(json.dumps(metrics, default=str))


@app.command("eval-risk")
def eval_risk(
    workdir: WorkdirOpt = None,
    model: Annotated[Path | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """AUROC, AUPRC, Brier and calibration curves for each target, beside LACE alone."""
    from pipeline.tasks import history

    settings = _settings(workdir)
    result = history.evaluate_risk_model(settings, model or settings.risk_model_dir)
    if as_json:
        print(json.dumps(result, default=str))
        return
    table = Table(title="risk model on the held-out (later) period")
    for col in ("target", "AUROC", "AUPRC", "Brier"):
        table.add_column(col)
    for target, m in result.items():
        if isinstance(m, dict) and "auroc" in m:
            table.add_row(target, *(f"{m[k]:.3f}" if m.get(k) is not None else "-" for k in ("auroc", "auprc", "brier")))
    console.print(table)
    versus = result.get("readmit_30d_vs_lace", {})
    if versus.get("auroc_difference") is not None:
        low, high = versus["ci95"]
        console.print(f"readmission AUROC, model - LACE: {versus['auroc_difference']:+.3f} "
                      f"(95% CI {low:+.3f} to {high:+.3f}; {versus['method']}, "
                      f"{versus['replicates']} replicates, seed {versus['seed']})")


# --- PHI gate ----------------------------------------------------------------------------------------
@app.command("train-phi")
def train_phi(
    workdir: WorkdirOpt = None,
    out: Annotated[Path | None, typer.Option(help="Model folder (default: EHR_PHI_MODEL_PATH or <workdir>/models/phi).")] = None,
    notes: Annotated[int, typer.Option(min=1, help="Generated training notes (the train split).")] = 9000,
    steps: Annotated[int, typer.Option(min=1, help="Training steps (batches of 16 windows).")] = 2700,
    negatives: Annotated[int, typer.Option(min=0, help="Identifier-free generated clinical notes added as hard "
                                           "negatives (discharge summaries and clinic notes, all O).")] = 900,
    init: Annotated[Path | None, typer.Option(help="Continue from this PHI checkpoint instead of MiniLM-L6.")] = None,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = 3e-4,
    layers: Annotated[int, typer.Option(min=1, max=6, help="Encoder layers kept of MiniLM-L6's six (more: better "
                                        "recall, slower gate).")] = 3,
) -> None:
    """Train the PHI tagger on generated notes with planted surrogate identifiers."""
    from pipeline.bench.phi import train_phi_model

    settings = _settings(workdir)
    target = out or settings.phi_model_dir
    with _progress() as progress:
        bar = progress.add_task("training the PHI tagger", total=steps)
        card = train_phi_model(target, n_notes=notes, steps=steps, n_negatives=negatives, init=init,
                               learning_rate=learning_rate, layers=layers,
                               progress=lambda done, total, *_: progress.update(bar, completed=done, total=total))
    console.print(f"saved {target}")
    console.print_json(json.dumps(card, default=str))


@app.command("eval-phi")
def eval_phi(
    workdir: WorkdirOpt = None,
    model: Annotated[Path | None, typer.Option(help="PHI model folder (default: the configured one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    notes: Annotated[int, typer.Option(min=1, help="Held-out generated notes.")] = 1000,
    deidentified: Annotated[int, typer.Option(min=1, help="Placeholder-only texts for the false-positive rate.")] = 2000,
    clinical: Annotated[int, typer.Option(min=0, help="Held-out generated clinical notes for the false-positive "
                                          "rate on clinician-style text.")] = 300,
    threshold: Annotated[float | None, typer.Option(help="Tagger threshold (default EHR_PHI_THRESHOLD).")] = None,
    rules_only: Annotated[bool, typer.Option("--rules-only", help="The deterministic recognizers alone.")] = False,
    cost: Annotated[bool, typer.Option("--cost", help="Also time the gate against the NER model per note.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the '## PHI gate' section of this BENCHMARKS.md.")] = None,
) -> None:
    """PHI gate recall per type (note- and span-level) on held-out generated notes; false positives on
    de-identified text."""
    from pipeline.bench.phi import evaluate_phi, phi_cost

    settings = _settings(workdir)
    path = model or settings.phi_model_dir
    if not rules_only and not path.exists():
        err.print(f"[red]no PHI model at {path}[/red]: train one with `ehr-pipeline train-phi` (or use --rules-only)")
        raise typer.Exit(2)
    result = evaluate_phi(None if rules_only else path, n_notes=notes, n_deidentified=deidentified,
                          n_clinical=clinical, threshold=threshold if threshold is not None else settings.phi_threshold)
    if cost and not rules_only:
        result["cost"] = phi_cost(path, settings.ner_model_dir)
    if out is not None:
        from pipeline.bench.phi import render_section
        from pipeline.bench.sections import replace_section

        rules = None if rules_only else evaluate_phi(None, n_notes=notes, n_deidentified=deidentified,
                                                     n_clinical=clinical)
        command = (f"ehr-pipeline eval-phi --notes {notes} --deidentified {deidentified} --clinical {clinical}"
                   + (" --cost" if cost else ""))
        replace_section(out, render_section(result, rules, command=command + f" --out {out.name}"))
    if as_json:
        print(json.dumps(result, default=str))
        return
    table = Table(title="PHI gate on held-out generated notes (unseen templates and surrogates)")
    for col in ("type", "notes", "note recall", "flagged", "spans", "span recall", "typed"):
        table.add_column(col)
    for group, m in result["per_type"].items():
        table.add_row(group, str(m["notes"]), *(f"{m[k]:.3f}" if m[k] is not None else "-"
                                                for k in ("note_recall", "note_flagged")),
                      str(m["spans"]), *(f"{m[k]:.3f}" if m[k] is not None else "-"
                                         for k in ("span_recall", "span_recall_typed")))
    console.print(table)
    fp = result["false_positives"]
    console.print(f"false positives: {fp['deidentified_flagged']}/{fp['deidentified_texts']} de-identified texts "
                  f"({fp['deidentified_rate']:.2%}), {fp['clean_notes_flagged']}/{fp['clean_notes']} clean notes, "
                  f"{fp['clinical_notes_flagged']}/{fp['clinical_notes']} clinical notes")
    for key, goal in result["goals"].items():
        console.print(f"{'met ' if goal['met'] else 'MISSED'} {key}: {goal['value']} (goal {goal['goal']})")
    if "cost" in result:
        c = result["cost"]
        console.print(f"cost: gate {c['gate_ms_per_note']} ms/note vs NER stage {c['ner_stage_ms_per_note']} ms/note "
                      f"(NER model alone {c['ner_model_ms_per_note']} ms/note); gate / {c['compared_with']} = {c['gate_over_ner']}")


@app.command("scan-phi")
def scan_phi(
    path: Annotated[Path, typer.Argument(help="A CSV, CSV.gz or Parquet file of notes (a text column), or a folder.")],
    workdir: WorkdirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per note (JSON lines).")] = False,
    show_clean: Annotated[bool, typer.Option("--all", help="List notes without findings too.")] = False,
) -> None:
    """Check an export before loading it: per note, the PHI types and offsets found (never the text).

    Exit status 1 when any note has a finding, 0 when none, 2 on a usage or model error."""
    from pipeline.tasks.phi import scan_export

    _setup_logging()
    settings = _settings(workdir)
    try:
        scanned = scan_export(path, settings)
    except (FileNotFoundError, RuntimeError) as exc:
        err.print(f"[red]scan-phi:[/red] {exc}")
        raise typer.Exit(2) from None
    flagged = [s for s in scanned if s.findings]
    if as_json:
        for s in scanned if show_clean else flagged:
            print(json.dumps({"file": s.file, "note_id": s.note_id, "chars": s.chars, "findings": s.findings}))
    else:
        table = Table(title=f"PHI found in {len(flagged)} of {len(scanned)} notes")
        for col in ("file", "note_id", "types", "offsets (start-end score)"):
            table.add_column(col)
        for s in scanned if show_clean else flagged:
            types = sorted({f["type"] for f in s.findings})
            offsets = ", ".join(f"{f['type']} {f['start']}-{f['end']} {f['score']:.2f}" for f in s.findings)
            table.add_row(Path(s.file).name, s.note_id, ",".join(types) or "-", offsets or "-")
        console.print(table)
    raise typer.Exit(1 if flagged else 0)


# --- benchmarks --------------------------------------------------------------------------------------
@bench_app.command("ner")
def bench_ner(
    workdir: WorkdirOpt = None,
    notes: Annotated[int, typer.Option(help="Notes to run (a), (b) and (c) on.")] = 200,
    eval_notes: Annotated[int, typer.Option(help="Held-out notes for the F1 change of precision switches.")] = 150,
    model: Annotated[Path | None, typer.Option(help="Model folder (default: EHR_NER_MODEL_PATH).")] = None,
    out: Path = Path("BENCHMARKS.md"),
    real: Annotated[Path | None, typer.Option(
        "--real", help="Anafora folder of real notes for the precision switches' F1 change (default: the vendored "
        "tests/fixtures/ctakes-dev when present).")] = None,
) -> None:
    """Naive HF pipeline vs our transformer step vs our whole NER stage (+ CPU precision switches bf16, int8)."""
    from pipeline.bench.ner import run_ner_benchmark
    from pipeline.config import REPO_ROOT

    settings = _settings(workdir)
    model_dir = model or settings.ner_model_dir
    vendored = REPO_ROOT / "tests" / "fixtures" / "ctakes-dev"
    real_dir = real or (vendored if vendored.is_dir() else None)
    with console.status(f"benchmarking NER on {notes} notes"):
        result = run_ner_benchmark(model_dir, notes, out, eval_notes=eval_notes, real_dir=real_dir)
    console.print_json(json.dumps(result, default=str))
    console.print(f"written to {out}")


@bench_app.command("ner-memory")
def bench_ner_memory(
    workdir: WorkdirOpt = None,
    notes: Annotated[int, typer.Option(help="Notes in the one partition the NER task processes.")] = 10_000,
    model: Annotated[Path | None, typer.Option(help="Model folder (default: EHR_NER_MODEL_PATH).")] = None,
    out: Path = Path("BENCHMARKS.md"),
) -> None:
    """Peak RSS of the real NER task on one partition of --notes notes (the 3 GB bound)."""
    from pipeline.bench.ner_memory import run_ner_memory_benchmark

    settings = _settings(workdir)
    with console.status(f"NER task on a {notes:,}-note partition"):
        result = run_ner_memory_benchmark(model or settings.ner_model_dir, notes, out)
    console.print_json(json.dumps(result, default=str))
    console.print(f"written to {out}")


@bench_app.command("validate")
def bench_validate(rows: Annotated[int, typer.Option()] = 1_000_000, out: Path = Path("BENCHMARKS.md")) -> None:
    """Validation of one million lab rows."""
    from pipeline.bench.validate import run_validation_benchmark

    console.print_json(json.dumps(run_validation_benchmark(rows=rows, out_md=out), default=str))


@bench_app.command("load")
def bench_load(url: Annotated[str | None, typer.Option(help="PostgreSQL URL (default EHR_WAREHOUSE_URL).")] = None,
               rows: Annotated[int, typer.Option()] = 1_000_000, out: Path = Path("BENCHMARKS.md")) -> None:
    """Bulk load of note_entities into PostgreSQL, ours vs pandas.to_sql."""
    from pipeline.bench.load import run_load_benchmark

    target = url or os.environ.get("EHR_WAREHOUSE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    console.print_json(json.dumps(run_load_benchmark(target, rows=rows, out_md=out), default=str))


# --- demo ---------------------------------------------------------------------------------------
@app.command()
def demo(
    workdir: WorkdirOpt = None,
    patients: Annotated[int, typer.Option(min=10)] = 1500,
    days: Annotated[int, typer.Option(min=1)] = 3,
    history_days: Annotated[int, typer.Option(min=30)] = 365,
    seed: Annotated[int, typer.Option()] = 7,
    layout: Annotated[str | None, typer.Option(
        help="mimic4 or mimic3 (overrides EHR_SOURCE_LAYOUT; default: EHR_SOURCE_LAYOUT, else mimic4).")] = None,
    skip_models: Annotated[bool, typer.Option(help="Do not train models; run without NER and risk.")] = False,
) -> None:
    """Generate data, bootstrap models if absent, run the real Airflow DAG for N days, print the warehouse."""
    from pipeline.tasks import history

    # only an explicit --layout overrides the environment and pipeline.yaml
    overrides: dict[str, Any] = {"source_layout": layout} if layout is not None else {}
    settings = _settings(workdir, **overrides)
    if settings.source_layout not in ("mimic4", "mimic3"):
        err.print(f"[red]configuration error:[/red] EHR_SOURCE_LAYOUT={settings.source_layout}: the demo generates "
                  "a folder source, so it needs mimic4 or mimic3 (or pass --layout)")
        raise typer.Exit(2)
    layout = settings.source_layout
    t0 = time.perf_counter()
    with _progress_if_any("generating synthetic MIMIC data") as progress:
        generated = airflow_local.ensure_source(settings, patients=patients, days=days, history_days=history_days,
                                                seed=seed, layout=layout, progress=progress)
    console.print(f"source: {settings.source_dir} ({'generated' if generated else 'reused'})")

    # The PHI gate's tagger is not trained here: one trained within the demo's time (300 steps) held about half
    # of the generated discharge notes as suspected PHI (drug brands, eponyms, lab values), which fails the
    # history's quarantine-share check. Without a tagger the gate runs its rules (logged as a warning).
    if (settings.phi_model_dir / "config.json").is_file():
        console.print(f"PHI gate: tagger {settings.phi_model_dir} and the rules", soft_wrap=True)
    else:
        console.print("PHI gate: rules only (no tagger; `ehr-pipeline train-phi` trains one, BENCHMARKS.md has its "
                      "figures)")

    first_day = DEMO_START
    history_start, history_end = first_day - timedelta(days=history_days), first_day - timedelta(days=1)
    with console.status(f"loading history {history_start}..{history_end} into the warehouse"):
        history.ingest_history(history_start, history_end, settings=settings)
    console.print(f"history loaded: {history_start}..{history_end}")

    if not skip_models:
        if not (settings.ner_model_dir / "config.json").is_file():
            train_ner(workdir=settings.workdir_abs, out=settings.ner_model_dir)
        else:
            console.print(f"NER model: reusing {settings.ner_model_dir}")
        from pipeline.risk.model import risk_model_present  # here, not at the top: it imports torch

        if not risk_model_present(settings.risk_model_dir):
            train_risk(workdir=settings.workdir_abs, out=settings.risk_model_dir)
        else:
            console.print(f"risk model: reusing {settings.risk_model_dir}")

    env = airflow_local.prepare_airflow(settings)
    if skip_models:
        env["EHR_NER_ENABLED"] = env["EHR_RISK_ENABLED"] = "false"
    demo_days = [first_day + timedelta(days=i) for i in range(days)]
    with _progress() as progress:
        bar = progress.add_task("ehr_nightly (airflow dags test)", total=len(demo_days))
        for day in demo_days:
            progress.update(bar, description=f"ehr_nightly {day}")
            airflow_local.run_dag_day(env, day)
            progress.advance(bar)
    console.print(_counts_table(settings, demo_days[0], demo_days[-1]))
    docs_index = settings.data_docs_dir / "index.html"
    if docs_index.is_file():  # only a site that was built (validation may not have run)
        console.print(f"Data Docs: {docs_index}")
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    # last, so it is the line people see: the report site the nightly runs wrote
    console.print(f"run report: {settings.reports_dir / 'index.html'}", soft_wrap=True)


def _print_day(summary: dict[str, Any]) -> None:
    table = Table(title=f"ds={summary['ds']} run {summary['run_id']}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in summary["warehouse_rows"].items():
        table.add_row(name, str(n))
    console.print(table)
    if summary.get("drifted"):
        console.print(f"[yellow]drift:[/yellow] {', '.join(summary['drifted'])}")
    if summary.get("report"):
        console.print(f"run report: {summary['report']}", soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    app()
