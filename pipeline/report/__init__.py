"""The run report: drift checks (:mod:`.drift`), plots (:mod:`.plots`) and the static HTML site (:mod:`.site`).

Table in, files out: the report task (``pipeline.tasks.reporting``) reads the warehouse and hands the
tables here; nothing in this package opens the warehouse, the lake or a model. Ids and counts only: no
note text reaches a page.
"""
