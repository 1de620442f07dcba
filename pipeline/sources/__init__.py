"""Source readers (MIMIC-IV folder, MIMIC-III folder, SQL database) and extraction to canonical tables."""

from __future__ import annotations

from pipeline.sources.base import (
    ExtractResult,
    SourceError,
    SourceReader,
    absent_tables,
    extract_range,
    read_all,
)


def open_source(layout: str, path=None, url: str | None = None, schemas: str | None = None) -> SourceReader:
    """The reader for a configured source (EHR_SOURCE_LAYOUT, EHR_SOURCE_PATH, EHR_SOURCE_URL, EHR_SOURCE_SCHEMAS)."""
    if layout == "mimic4":
        from pipeline.sources.files import FolderReader

        return FolderReader(path, "mimic4")
    if layout == "mimic3":
        from pipeline.sources.mimic3 import Mimic3Reader

        return Mimic3Reader(path)
    if layout == "sql":
        from pipeline.sources.sql import SqlReader

        if not url:
            raise SourceError("EHR_SOURCE_URL is required when EHR_SOURCE_LAYOUT=sql")
        return SqlReader(url, schemas)
    raise SourceError(f"EHR_SOURCE_LAYOUT: unknown layout {layout!r} (mimic4, mimic3 or sql)")


__all__ = ["ExtractResult", "SourceError", "SourceReader", "absent_tables", "extract_range", "open_source", "read_all"]
