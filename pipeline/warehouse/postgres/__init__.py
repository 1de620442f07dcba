"""PostgreSQL warehouse: the production backend.

- :mod:`.connection`: the connection URL, password redaction in every message, ``?`` placeholders;
- :mod:`.schema`: the DDL applied (skipped when unchanged), migration of unpartitioned tables to day
  partitions, the check of each live table against its contract before a load;
- :mod:`.partitions`: how a day is replaced: binary COPY, day partitions of the large tables built aside
  and swapped in under a bounded lock wait;
- :mod:`.warehouse`: :class:`PostgresWarehouse`, which owns the connection and the transactions.

Callers use ``open_warehouse(url)`` (or ``PostgresWarehouse``); the other names are re-exported for the
load benchmark. Tests that change a module's setting (``COPY_BATCH_ROWS``, ``SWAP_ATTEMPTS``, ...) patch
the module that defines it, not this package.
"""

from pipeline.warehouse.postgres.connection import ConnectionTarget, libpq_uri, redact, translate_placeholders
from pipeline.warehouse.postgres.partitions import COPY_BATCH_ROWS, LOAD_PHASES, partition_name
from pipeline.warehouse.postgres.schema import LiveTable, partitioned_ddl
from pipeline.warehouse.postgres.warehouse import PostgresWarehouse

__all__ = [
    "COPY_BATCH_ROWS",
    "LOAD_PHASES",
    "ConnectionTarget",
    "LiveTable",
    "PostgresWarehouse",
    "libpq_uri",
    "partition_name",
    "partitioned_ddl",
    "redact",
    "translate_placeholders",
]
