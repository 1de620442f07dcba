"""Task functions: what the Airflow DAG and the CLI call. Each reads the lake or the warehouse, calls a
stage, writes its output and records its run.

- :mod:`pipeline.tasks.runs`: run ids, run records (``ehr.pipeline_runs``) and the task errors;
- :mod:`pipeline.tasks.nightly`: the nightly DAG's tasks (extract, validate, ner, risk, load, report) and
  ``run_day``, the same stages in order outside the scheduler;
- :mod:`pipeline.tasks.history`: the bulk history load and risk-model training and evaluation on it.

Nothing is re-exported here: import the module (``from pipeline.tasks import nightly``), so that a test
replacing ``nightly.validate`` replaces what the DAG calls.
"""
