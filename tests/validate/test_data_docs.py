"""Data Docs accumulate across days (one persistent GX results store); a rerun of a day replaces its pages."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

from pipeline.contracts import INPUT_TABLES
from pipeline.validate import ValidationConfig, validate_batch
from pipeline.validate.gx_runner import run_name_prefix

from .conftest import DS, known_admissions, patient, run, to_tables

DS2 = DS + timedelta(days=1)


def _on_day(rows: dict[str, list[dict]], day) -> dict[str, list[dict]]:
    return {name: [dict(row, ds=day) for row in table] for name, table in rows.items()}


def _pages(docs: Path) -> dict[str, list[Path]]:
    """Validation pages per day, from the run-name folder GX writes them under."""
    pages: dict[str, list[Path]] = {}
    for page in (docs / "validations").rglob("*.html"):
        run_name = page.relative_to(docs / "validations").parts[1]
        pages.setdefault(run_name.split("__")[0], []).append(page)
    return pages


def test_data_docs_keep_every_day_and_index_links_them(clean_rows, tmp_path):
    docs = tmp_path / "data_docs"
    results = tmp_path / "gx" / "validations"
    first = run(clean_rows, data_docs_dir=docs, gx_results_dir=results)
    second_rows = _on_day(clean_rows, DS2)
    second_rows["patients"].append(patient(3, gender="Z", ds=DS2))
    second = validate_batch(to_tables(second_rows), ds=DS2, run_id="run-day-2", pre_quarantine=None,
                            known_admissions=known_admissions(), known_subject_ids=None, trailing_volumes={},
                            config=ValidationConfig(on_batch_failure="warn"), data_docs_dir=docs,
                            gx_results_dir=results)
    assert first.data_docs_index == second.data_docs_index == docs / "index.html"
    pages = _pages(docs)
    assert sorted(pages) == [run_name_prefix(DS).rstrip("_"), run_name_prefix(DS2).rstrip("_")]
    assert all(len(day_pages) == len(INPUT_TABLES) for day_pages in pages.values())  # one page per table and day
    index = (docs / "index.html").read_text()
    links = {unquote(link) for link in re.findall(r"validations/[^'\"]+?\.html", index)}
    assert links == {page.relative_to(docs).as_posix() for day_pages in pages.values() for page in day_pages}
    assert len(list(results.rglob("*.json"))) == 2 * len(INPUT_TABLES)  # the store GX builds the docs from


def test_data_docs_rerun_of_a_day_replaces_its_pages(clean_rows, tmp_path):
    docs = tmp_path / "data_docs"
    run(clean_rows, data_docs_dir=docs)  # default store: <docs>/../gx/validations
    before = _pages(docs)[run_name_prefix(DS).rstrip("_")]
    run(clean_rows, data_docs_dir=docs)
    after = _pages(docs)[run_name_prefix(DS).rstrip("_")]
    assert len(before) == len(after) == len(INPUT_TABLES)
    assert not set(before) & set(after)  # the earlier run's pages are gone, not kept beside the new ones
    assert len(list((tmp_path / "gx" / "validations").rglob("*.json"))) == len(INPUT_TABLES)
