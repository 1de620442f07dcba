"""Shared by the task tests: validated notes built by hand and a SQL source that records how it is opened (the
tiny NER model and the risk model are session fixtures of tests/conftest.py)."""

from __future__ import annotations

from datetime import date, datetime

import pyarrow as pa
import pytest

from pipeline.config import Settings, load_settings
from pipeline.contracts import arrow_schema


def make_notes(texts: list[str | None], day: date, subject_ids: list[int] | None = None) -> pa.Table:
    """Validated notes of ``day``: note ``n<i>`` has text ``texts[i]`` (every third has no admission)."""
    subjects = subject_ids or [100 + i for i in range(len(texts))]
    return pa.Table.from_pylist([
        {"note_id": f"n{i}", "subject_id": subject, "hadm_id": None if i % 3 == 0 else 1000 + i, "note_type": "DS",
         "note_seq": 1, "charttime": datetime.combine(day, datetime.min.time()), "storetime": None, "text": text,
         "ds": day}
        for i, (text, subject) in enumerate(zip(texts, subjects, strict=True))
    ], schema=arrow_schema("notes"))


class SourceOpened(Exception):
    """Raised by the stand-in source reader: how it was opened is all these tests need."""


#: What the reader must be opened with for the ``sql_source`` settings.
SQL_SOURCE = {"layout": "sql", "url": "sqlite:///x.db", "schemas": "mimiciv_hosp,notes=mimiciv_note"}


@pytest.fixture
def sql_source(monkeypatch: pytest.MonkeyPatch, tmp_path) -> tuple[Settings, dict]:
    """Settings for a SQL source, and the arguments the source reader gets (it raises SourceOpened)."""
    seen: dict = {}

    def fake_open_source(layout, path=None, url=None, schemas=None):
        seen.update(layout=layout, url=url, schemas=schemas)
        raise SourceOpened

    monkeypatch.setattr("pipeline.sources.open_source", fake_open_source)
    settings = load_settings(workdir=tmp_path, source_layout=SQL_SOURCE["layout"], source_url=SQL_SOURCE["url"],
                             source_schemas=SQL_SOURCE["schemas"])
    return settings, seen
