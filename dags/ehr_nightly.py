"""
### ehr_nightly

Takes one day (`ds`) of de-identified MIMIC-style records through the pipeline:

1. **extract** the day's rows from the source into `lake/raw` (typed against `schemas/tables`),
2. **validate** them with Great Expectations: passed rows to `lake/validated`, failed rows to quarantine,
3. **ner** — one mapped task per notes part: clinical entities with assertion flags and sections,
4. **risk** — one mapped task per admissions part: Charlson, Elixhauser, LACE and model probabilities,
5. **load** the day into the warehouse in one transaction (a rerun replaces the day),
6. **report** counts, the conservation check and where the Data Docs are.

NER and risk tasks go to the queue and pool named by `EHR_GPU_QUEUE` / `EHR_GPU_POOL` (default `gpu`).
Backfills: `airflow backfill create --dag-id ehr_nightly --from-date … --to-date …` or `ehr-pipeline backfill`.
The logic lives in `pipeline.tasks.nightly`; this file only wires it. Heavy imports happen inside the tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime

from airflow.sdk import dag, get_current_context, task

from pipeline.config import load_settings

SETTINGS = load_settings()  # environment and pipeline.yaml only: no database or network at parse time


def _ds() -> date:
    return date.fromisoformat(get_current_context()["ds"])


def _run_id() -> str:
    return str(get_current_context()["run_id"])


@contextmanager
def _one_run_per_day() -> Iterator[None]:
    """The day's lock (:mod:`pipeline.tasks.daylock`) while a whole-day task works: a CLI run of the same day
    waits for it, and it for the CLI run. The mapped NER/risk parts of one run share the day."""
    from pipeline.tasks.daylock import day_lock

    with day_lock(load_settings(), _ds(), run_id=_run_id()):
        yield


@dag(
    dag_id="ehr_nightly",
    schedule=SETTINGS.schedule,
    start_date=datetime(SETTINGS.start_date.year, SETTINGS.start_date.month, SETTINGS.start_date.day),
    catchup=SETTINGS.catchup,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["ehr", "mimic", "nightly"],
    default_args=SETTINGS.dag_default_args,
)
def ehr_nightly() -> None:
    @task
    def extract() -> dict[str, int]:
        from pipeline.tasks import nightly
        from pipeline.tasks.preflight import check_ready
        from pipeline.tasks.runs import fails_without_retry

        with fails_without_retry():
            check_ready(load_settings())  # models and settings before any work
            with _one_run_per_day():
                return nightly.extract(_ds(), run_id=_run_id())

    @task
    def validate() -> dict[str, list[int]]:
        from pipeline.tasks import nightly
        from pipeline.tasks.runs import fails_without_retry

        with fails_without_retry(), _one_run_per_day():
            parts = nightly.validate(_ds(), run_id=_run_id())
            nightly.clear_enriched(_ds())
        return parts

    @task
    def notes_parts(parts: dict[str, list[int]]) -> list[int]:
        return parts["notes_parts"]

    @task
    def admission_parts(parts: dict[str, list[int]]) -> list[int]:
        return parts["admission_parts"]

    @task(queue=SETTINGS.gpu_queue, pool=SETTINGS.gpu_pool)
    def ner(part: int) -> dict[str, int]:
        from pipeline.tasks import nightly
        from pipeline.tasks.runs import fails_without_retry

        with fails_without_retry():
            return nightly.ner(_ds(), part, run_id=_run_id())

    @task(queue=SETTINGS.gpu_queue, pool=SETTINGS.gpu_pool, trigger_rule="none_failed")
    def risk(part: int) -> dict[str, int]:
        from pipeline.tasks import nightly
        from pipeline.tasks.runs import fails_without_retry

        with fails_without_retry():
            return nightly.risk(_ds(), part, run_id=_run_id())

    @task(trigger_rule="none_failed")
    def load() -> dict[str, int]:
        from pipeline.tasks import nightly
        from pipeline.tasks.runs import fails_without_retry

        with fails_without_retry(), _one_run_per_day():
            return nightly.load(_ds(), run_id=_run_id())

    @task
    def report() -> dict:
        from pipeline.tasks import nightly
        from pipeline.tasks.runs import fails_without_retry

        with fails_without_retry(), _one_run_per_day():
            return nightly.report(_ds(), run_id=_run_id())

    extracted = extract()
    parts = validate()
    extracted >> parts
    entities = ner.expand(part=notes_parts(parts))
    scores = risk.expand(part=admission_parts(parts))
    entities >> scores
    loaded = load()
    scores >> loaded
    loaded >> report()


dag = ehr_nightly()
