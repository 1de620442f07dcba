"""Warehouse backends behind one interface (DuckDB embedded default, PostgreSQL in production)."""

from pipeline.warehouse.base import (
    SchemaMismatchError,
    Warehouse,
    WarehouseError,
    open_warehouse,
    pinned_warehouse,
)

__all__ = ["SchemaMismatchError", "Warehouse", "WarehouseError", "open_warehouse", "pinned_warehouse"]
