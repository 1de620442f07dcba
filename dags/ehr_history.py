"""
### ehr_history

Seeds (or reprocesses) a range of history in chunks: the same plan as `ehr-pipeline backfill`, run by the
scheduler's workers. Trigger it with params, e.g.
`airflow dags trigger ehr_history --conf '{"start": "2025-01-01", "end": "2025-12-31", "chunk": "month"}'`.

1. **plan** — the chunks with work (`reprocess`: missing, failed, stale, all) and, when a chunk extracts, the
   one pass that stages the source (each source file read once);
2. **extract** — one mapped task per chunk, in parallel (pool `EHR_BACKFILL_POOL`);
3. **validate** — one per chunk, in chunk order (it learns the admissions earlier chunks validated);
4. **ner** — one per chunk on the queue and pool of the nightly NER (`EHR_GPU_QUEUE` / `EHR_GPU_POOL`);
5. **risk_load** — one per chunk, in chunk order: risk (GPU queue and pool) then the warehouse load, day by day;
6. **check** — fails listing the chunks whose stage failed (a failed chunk does not stop the others).

Every step records itself per chunk and stage with its versions (`ehr.pipeline_runs`, stage `backfill.*`),
so a rerun of the DAG (or of `ehr-pipeline backfill`) continues where the last one stopped. The logic lives in
`pipeline.tasks.backfill`; heavy imports happen inside the tasks. Short ranges can still use Airflow's own
`airflow backfill create --dag-id ehr_nightly …`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from pipeline.config import load_settings

SETTINGS = load_settings()  # environment and pipeline.yaml only: no database or network at parse time


def _params() -> dict[str, Any]:
    return dict(get_current_context()["params"])


def _run(item: dict[str, Any], group: str) -> dict[str, Any]:
    from pipeline.tasks import backfill
    from pipeline.tasks.runs import fails_without_retry

    with fails_without_retry():  # a chunk's own failure is recorded and returned; this is what escapes it
        return backfill.run_dag_group(item, group)


@dag(
    dag_id="ehr_history",
    schedule=None,
    start_date=datetime(SETTINGS.start_date.year, SETTINGS.start_date.month, SETTINGS.start_date.day),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["ehr", "mimic", "history"],
    params={
        "start": Param(type="string", format="date", description="first day of the range"),
        "end": Param(type="string", format="date", description="last day, inclusive"),
        "chunk": Param(SETTINGS.backfill_chunk, type="string", description="month, week or N days"),
        "reprocess": Param("missing", enum=["missing", "failed", "stale", "all"]),
        "skip_ner": Param(False, type="boolean", description="structured-only seed (NER recorded as skipped)"),
        "skip_risk": Param(False, type="boolean", description="no risk scores (e.g. no risk model yet)"),
    },
    default_args=SETTINGS.dag_default_args,
)
def ehr_history() -> None:
    @task
    def plan() -> list[dict[str, Any]]:
        from pipeline.tasks import backfill
        from pipeline.tasks.runs import fails_without_retry

        p = _params()
        with fails_without_retry():  # an unreadable source or a wrong setting stays so on retry
            return backfill.plan_for_dag(date.fromisoformat(p["start"]), date.fromisoformat(p["end"]),
                                         chunk=p["chunk"], reprocess=p["reprocess"], skip_ner=p["skip_ner"],
                                         skip_risk=p["skip_risk"])

    @task(pool=SETTINGS.backfill_pool)
    def extract(item: dict[str, Any]) -> dict[str, Any]:
        return _run(item, "extract")

    @task(pool=SETTINGS.backfill_pool, max_active_tis_per_dagrun=1)
    def validate(item: dict[str, Any]) -> dict[str, Any]:
        return _run(item, "validate")

    @task(queue=SETTINGS.gpu_queue, pool=SETTINGS.gpu_pool)
    def ner(item: dict[str, Any]) -> dict[str, Any]:
        return _run(item, "ner")

    @task(queue=SETTINGS.gpu_queue, pool=SETTINGS.gpu_pool, max_active_tis_per_dagrun=1)
    def risk_load(item: dict[str, Any]) -> dict[str, Any]:
        return _run(item, "risk_load")

    @task(trigger_rule="all_done")
    def check() -> None:
        from pipeline.tasks import backfill
        from pipeline.tasks.runs import PipelineError

        p = _params()
        failed = backfill.failed_chunks(date.fromisoformat(p["start"]), date.fromisoformat(p["end"]))
        if failed:
            raise PipelineError("backfill chunks failed: " + "; ".join(failed))

    done = risk_load.expand(item=ner.expand(item=validate.expand(item=extract.expand(item=plan()))))
    done >> check()


dag = ehr_history()
