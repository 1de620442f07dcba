"""Great Expectations Data Docs that work without a network.

GX 1.x renders every Data Docs page with ``<link>`` and ``<script>`` tags pointing at CDNs (jQuery, Bootstrap,
bootstrap-table, Font Awesome, Vega, ...), written into its Jinja templates (``js_script_imports.j2``,
``page.j2``); its site configuration has no setting for them, and a custom views directory is searched after
the package's own templates, so it cannot replace them. Offline, the pages come up unstyled and their tables
empty (bootstrap-table fills them from JavaScript). So after each build, :func:`make_offline` copies local
copies of those assets into ``<site>/static/vendor/`` and rewrites the tags to point at them:

- jQuery, Bootstrap 4 (its bundle includes Popper), bootstrap-datepicker and Font Awesome from PyPI packages
  (xstatic-*, fontawesomefree); bootstrap-table from ``data_docs_vendor/`` (npm only; see its README);
- the GX logo from the site's own ``static/images`` (and the favicon link, which GX writes one ``../`` short
  on validation pages);
- tags with nothing to load offline are dropped: the Vega libraries (only expectation charts use them, and
  our suites draw none: a page that does is logged), a dark-mode stylesheet, and Popper (in the bundle).

Links people click (the GX home page) are left alone: they are not loaded with the page.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

VENDOR = "static/vendor"
VENDORED_DIR = Path(__file__).with_name("data_docs_vendor")


def _xstatic(module: str) -> Callable[[], Path]:
    def base() -> Path:
        return Path(__import__(f"xstatic.pkg.{module}", fromlist=["BASE_DIR"]).BASE_DIR)

    return base


def _fontawesome() -> Path:
    import fontawesomefree

    return Path(fontawesomefree.__file__).parent / "static" / "fontawesomefree"


@dataclass(frozen=True)
class Asset:
    """A CDN file the pages load, and the local copy that replaces it (``None``: the tag is dropped)."""

    pattern: str  # regex matching the URL
    local: str | None  # path under static/vendor (or under the site, for site_file)
    source: Callable[[], Path] | None = None  # folder the local copy comes from
    source_path: str = ""  # file (or folder) inside it
    site_file: bool = False  # ``local`` is a file GX already puts in the site


ASSETS: tuple[Asset, ...] = (
    Asset(r"https://code\.jquery\.com/jquery-3\.[0-9.]+\.min\.js", "jquery/jquery.min.js", _xstatic("jquery"),
          "jquery.min.js"),
    Asset(r"https://[a-z.]+/bootstrap/4\.[0-9.]+/css/bootstrap\.min\.css", "bootstrap/css/bootstrap.min.css",
          _xstatic("bootstrap"), "css/bootstrap.min.css"),
    Asset(r"https://[a-z.]+/bootstrap/4\.[0-9.]+/js/bootstrap\.min\.js", "bootstrap/js/bootstrap.bundle.min.js",
          _xstatic("bootstrap"), "js/bootstrap.bundle.min.js"),
    Asset(r"https://cdnjs\.cloudflare\.com/ajax/libs/popper\.js/[0-9.]+/umd/popper\.min\.js", None),
    Asset(r"https://cdnjs\.cloudflare\.com/ajax/libs/bootstrap-datepicker/[0-9.]+/js/bootstrap-datepicker\.min\.js",
          "bootstrap-datepicker/bootstrap-datepicker.js", _xstatic("bootstrap_datepicker"), "bootstrap-datepicker.js"),
    Asset(r"https://cdnjs\.cloudflare\.com/ajax/libs/bootstrap-datepicker/[0-9.]+/css/bootstrap-datepicker\.min\.css",
          "bootstrap-datepicker/bootstrap-datepicker3.standalone.css", _xstatic("bootstrap_datepicker"),
          "bootstrap-datepicker3.standalone.css"),
    Asset(r"https://cdnjs\.cloudflare\.com/ajax/libs/font-awesome/[0-9.]+/css/all\.min\.css",
          "fontawesome/css/all.min.css", _fontawesome, "css/all.min.css"),
    Asset(r"https://unpkg\.com/bootstrap-table@[0-9.]+/dist/bootstrap-table\.min\.js",
          "bootstrap-table/bootstrap-table.min.js", lambda: VENDORED_DIR, "bootstrap-table/bootstrap-table.min.js"),
    Asset(r"https://unpkg\.com/bootstrap-table@[0-9.]+/dist/bootstrap-table\.min\.css",
          "bootstrap-table/bootstrap-table.min.css", lambda: VENDORED_DIR, "bootstrap-table/bootstrap-table.min.css"),
    Asset(r"https://unpkg\.com/bootstrap-table@[0-9.]+/dist/extensions/filter-control/"
          r"bootstrap-table-filter-control\.min\.js", "bootstrap-table/bootstrap-table-filter-control.min.js",
          lambda: VENDORED_DIR, "bootstrap-table/extensions/filter-control/bootstrap-table-filter-control.min.js"),
    Asset(r"https://unpkg\.com/bootstrap-table@[0-9.]+/dist/extensions/filter-control/"
          r"bootstrap-table-filter-control(\.min)?\.css", "bootstrap-table/bootstrap-table-filter-control.min.css",
          lambda: VENDORED_DIR, "bootstrap-table/extensions/filter-control/bootstrap-table-filter-control.min.css"),
    Asset(r"https://cdn\.jsdelivr\.net/npm/vega(-lite|-embed)?@[0-9]+", None),
    Asset(r"https://cdn\.jsdelivr\.net/npm/@forevolve/bootstrap-dark@[0-9.]+/[^\"']*", None),
    Asset(r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/logo-long\.png(\?[^\"']*)?",
          "static/images/logo-long.png", site_file=True),
)
#: The Font Awesome stylesheet loads its fonts from ../webfonts/ beside it.
_FONTS = ("fontawesome/webfonts", _fontawesome, "webfonts")
_TAG = re.compile(r"<(script|link|img)\b[^>]*?\b(src|href)=[\"'](https?://[^\"']+)[\"'][^>]*>(\s*</script>)?",
                  re.IGNORECASE)


_FAVICON = re.compile(r'(<link rel="shortcut icon" href=")[^"]*static/images/favicon\.ico(")')


@cache
def _compiled() -> tuple[tuple[re.Pattern[str], Asset], ...]:
    return tuple((re.compile(asset.pattern + r"\Z"), asset) for asset in ASSETS)


def _asset_for(url: str) -> Asset | None:
    for pattern, asset in _compiled():
        if pattern.match(url):
            return asset
    return None


def copy_assets(site: Path) -> None:
    """Put the local copies under ``<site>/static/vendor`` (once: files already there are kept)."""
    vendor = site / VENDOR
    wanted = [(a.local, a.source, a.source_path) for a in ASSETS if a.local and a.source and not a.site_file]
    for local, source, inner in [*wanted, _FONTS]:
        target = vendor / local
        if target.exists():
            continue
        origin = source() / inner
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, target)
        else:
            shutil.copyfile(origin, target)


def rewrite_page(html: str, page_dir: Path, site: Path) -> tuple[str, list[str]]:
    """``html`` with every CDN tag pointing at the local copy (relative to the page) or dropped; also returns
    the URLs no local copy is known for (left as they are)."""
    unknown: list[str] = []

    def replace(match: re.Match[str]) -> str:
        url = match.group(3)
        asset = _asset_for(url)
        if asset is None:
            unknown.append(url)
            return match.group(0)
        if asset.local is None:
            return ""
        target = site / asset.local if asset.site_file else site / VENDOR / asset.local
        relative = Path(os.path.relpath(target, page_dir)).as_posix()
        tag = match.group(0)
        tag = re.sub(r"\s+(integrity|crossorigin)=[\"'][^\"']*[\"']", "", tag)  # SRI hashes are the CDN files'
        return tag.replace(url, relative)

    html = _TAG.sub(replace, html)
    # GX links the favicon with a fixed number of ../ per kind of page, one too few on validation pages
    favicon = Path(os.path.relpath(site / "static" / "images" / "favicon.ico", page_dir)).as_posix()
    return _FAVICON.sub(rf"\g<1>{favicon}\g<2>", html), unknown


def make_offline(site: Path) -> int:
    """Make every page of the Data Docs site at ``site`` load only local files; returns the pages changed."""
    copy_assets(site)
    changed = 0
    unknown: set[str] = set()
    charts = 0
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        rewritten, missing = rewrite_page(html, page.parent, site)
        unknown.update(missing)
        charts += "vegaEmbed(" in html
        if rewritten != html:
            tmp = page.with_name(f".{page.name}.tmp")
            tmp.write_text(rewritten, encoding="utf-8")
            os.replace(tmp, page)
            changed += 1
    if unknown:
        log.warning("data docs: no local copy of %d asset(s), left pointing at the network: %s", len(unknown),
                    ", ".join(sorted(unknown)))
    if charts:
        log.warning("data docs: %d page(s) draw Vega charts, which need the network (not vendored)", charts)
    return changed
