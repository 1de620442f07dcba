"""Benchmarks, one module per ``ehr-pipeline bench`` command; each writes its own section of BENCHMARKS.md
(:func:`pipeline.bench.sections.replace_section`) with the command that reproduces it.

- ``ner``: naive transformers pipeline vs our transformer step vs our whole NER stage (``bench ner``);
- ``ner_memory``: peak RSS of the real NER task on one large partition (``bench ner-memory``);
- ``validate``: the validation stage on a synthetic day of labs (``bench validate``);
- ``load``: our PostgreSQL bulk load vs ``pandas.DataFrame.to_sql`` (``bench load``).

The package sits on top: it may call stages, tasks and the warehouse; its data comes from ``pipeline.synth``.
Nothing in the pipeline imports it.
"""
