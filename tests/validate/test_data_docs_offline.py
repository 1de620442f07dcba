"""Data Docs without a network (pipeline/validate/data_docs_offline.py): every CSS, JS and image tag of every page
points at a local file that exists, and rewriting twice changes nothing. (In a real browser, offline:
tests/report/test_browser.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.validate.data_docs_offline import ASSETS, VENDOR, make_offline, rewrite_page

from .conftest import run

_LOADED = re.compile(r"<(?:script|link|img)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)[\"']", re.IGNORECASE)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .conftest import base_batch

    site = tmp_path_factory.mktemp("offline") / "data_docs"
    run(base_batch(), data_docs_dir=site)  # builds the docs, which the runner makes offline
    return site


def test_data_docs_offline_pages_load_only_local_files_that_exist(docs: Path) -> None:
    pages = list(docs.rglob("*.html"))
    assert len(pages) >= 7  # the index, a validation page per table, expectation suites
    for page in pages:
        refs = _LOADED.findall(page.read_text(encoding="utf-8"))
        assert refs, page
        remote = [r for r in refs if re.match(r"(https?:)?//", r)]
        assert not remote, (page.relative_to(docs), remote)
        for ref in refs:
            assert (page.parent / ref.split("?")[0]).resolve().is_file(), (page.relative_to(docs), ref)
    index = (docs / "index.html").read_text(encoding="utf-8")
    assert f"{VENDOR}/bootstrap-table/bootstrap-table.min.js" in index and "integrity=" not in index


def test_data_docs_offline_is_idempotent(docs: Path) -> None:
    before = {p: p.read_bytes() for p in docs.rglob("*.html")}
    assert make_offline(docs) == 0
    assert {p: p.read_bytes() for p in docs.rglob("*.html")} == before


def test_data_docs_offline_rewrites_relative_to_the_page_and_drops_what_it_cannot_serve(tmp_path: Path) -> None:
    page_dir = tmp_path / "validations" / "suite" / "run" / "time"
    html = ('<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>'
            '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>'
            '<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" integrity="sha384-x" '
            'crossorigin="anonymous"></script>'
            '<link rel="shortcut icon" href="../../../static/images/favicon.ico" type="image/x-icon"/>'
            '<script src="https://example.org/unknown.js"></script>'
            '<a href="https://greatexpectations.io">GX</a>')
    rewritten, unknown = rewrite_page(html, page_dir, tmp_path)
    assert rewritten == (
        '<link rel="stylesheet" href="../../../../static/vendor/bootstrap/css/bootstrap.min.css"/>'
        '<script src="../../../../static/vendor/bootstrap/js/bootstrap.bundle.min.js"></script>'
        '<link rel="shortcut icon" href="../../../../static/images/favicon.ico" type="image/x-icon"/>'
        '<script src="https://example.org/unknown.js"></script>'  # no local copy known: left, and reported
        '<a href="https://greatexpectations.io">GX</a>'  # a link people click is not loaded with the page
    )
    assert unknown == ["https://example.org/unknown.js"]


def test_data_docs_offline_knows_every_cdn_url_gx_templates_hold() -> None:
    """GX's own templates: every CDN address they load from has a local copy or is dropped on purpose."""
    import great_expectations

    templates = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
    tag = re.compile(r"<(?:script|link)\b[^>]*?\b(?:src|href)=\"(https?://[^\"{]+)\"")
    loaded = {url for template in templates.glob("*.j2") for url in tag.findall(template.read_text())}
    patterns = [re.compile(a.pattern + r"\Z") for a in ASSETS]
    unmatched = sorted(u for u in loaded if not any(p.match(u) for p in patterns))
    assert loaded and not unmatched
