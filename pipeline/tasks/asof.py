"""History as of a day: what the pipeline knew by the end of ``ds``, whatever order days were run in.

The risk stage and validation's reference checks need earlier days (an admission's labs charted on the days
before its discharge, a patient's earlier admissions and their diagnoses). Read from the warehouse, that
history depended on which days happened to be loaded at that moment: days after ``ds`` loaded by an earlier
out-of-order run leaked in, days validated but not yet loaded were missing, so running day 2 before day 1
changed 4 of 11 risk bands. Here history is

- the lake's validated partitions of the days before ``ds`` (every day the nightly pipeline validated), and
- the warehouse's rows of earlier days the lake has no partition for (history bulk-loaded before the
  nightly runs began),

never a day at or after ``ds``. A backfill validates its days in order before it scores any of them
(:func:`pipeline.tasks.nightly.run_days`), so its scores do not depend on the order it is given.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import lake
from pipeline.config import Settings
from pipeline.contracts import arrow_schema

if TYPE_CHECKING:
    from pipeline.warehouse.base import Warehouse

VALIDATED = "validated"


def history(settings: Settings, ds: date, table: str, key: str, values: pa.Array | pa.ChunkedArray,
            *, first: date | None = None, wh: Warehouse | None = None) -> pa.Table:
    """Rows of ``table`` with ``key`` in ``values`` from the days before ``ds`` (from ``first`` on, if given)."""
    schema = arrow_schema(table)
    values = pc.unique(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    values = pc.drop_null(values)
    lake_days = lake.list_days(settings.lake_dir, VALIDATED, table, first=first, before=ds)
    parts = [lake.filter_in(lake.read_partition(settings.lake_dir, VALIDATED, table, day, schema), key, values)
             for day in lake_days]
    if wh is not None and len(values):
        stored = wh.select_where_in(table, key, values).cast(schema)
        day = stored.column("ds")
        keep = pc.less(day, pa.scalar(ds, pa.date32()))
        if first is not None:
            keep = pc.and_(keep, pc.greater_equal(day, pa.scalar(first, pa.date32())))
        if lake_days:
            keep = pc.and_(keep, pc.invert(pc.is_in(day, value_set=pa.array(lake_days, pa.date32()))))
        parts.append(stored.filter(pc.fill_null(keep, False)))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables([p.select(schema.names).cast(schema) for p in parts])


LAB_MARGIN_DAYS = 30  # labs of a stay charted before its admission time (emergency department)
PRIOR_DAYS = 366  # the risk features count earlier admissions admitted up to 12 months before the index one


def first_day(admissions: pa.Table, day_shift: int, days_before: int) -> date | None:
    """The run day ``days_before`` days before the earliest admission time of ``admissions`` (bounds the days
    read: history the features cannot use is not read). None when no admission time is known."""
    first = pc.min(admissions.column("admittime")).as_py()
    return None if first is None else first.date() - timedelta(days=day_shift + days_before)
