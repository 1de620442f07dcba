"""The run report in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by
Selenium) opens the index and a day page of a demo-like run (``report_run``) with the network off. No console
errors, every image loaded, and a full-page screenshot of each kept under ``artifacts/report-screenshots/``
(ignored by git) for people to look at. The Great Expectations Data Docs the report links to work offline too:
styled, and their tables filled (bootstrap-table, from local copies).

Without Chromium the test is skipped locally and fails in CI (EHR_REQUIRE_SERVICES=1; .ci/run installs it).
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT
from tests.services import skip_or_fail

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ARTIFACTS = REPO_ROOT / "artifacts" / "report-screenshots"
#: Flags for a browser that reaches nothing: no first-run, sync, update or background traffic.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--window-size=1300,1000")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        skip_or_fail("headless Chromium not installed (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver named explicitly: Selenium Manager would otherwise try to download one
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        session.execute_cdp_cmd("Network.enable", {})
        session.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        yield session
    finally:
        session.quit()


def _open(browser, page: Path) -> dict:
    """Load ``page``; return its console errors, the images that did not load and a full-page screenshot."""
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(page.as_uri())
    browser.execute_async_script(  # wait until every image has loaded or failed
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.complete ? null :"
        " new Promise(r => { i.onload = r; i.onerror = r; }))).then(() => done(null));")
    broken = browser.execute_script(
        "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);")
    images = browser.execute_script("return document.images.length;")
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    height = browser.execute_script("return document.documentElement.scrollHeight;")
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": 1300, "height": height, "scale": 1}})
    return {"errors": errors, "broken": broken, "images": images, "png": base64.b64decode(shot["data"]),
            "title": browser.title,
            "rows": browser.execute_script("return document.querySelectorAll('table tbody tr').length;"),
            "styled": browser.execute_script(  # Bootstrap's CSS loaded: its .d-none hides an element
                "const d = document.createElement('div'); d.className = 'd-none'; document.body.appendChild(d);"
                "return getComputedStyle(d).display === 'none';")}


@pytest.mark.parametrize("which", ["index", "shifted day"])
def test_browser_opens_the_report_offline_without_errors_and_with_every_image(report_run, browser, which) -> None:
    reports = report_run["settings"].reports_dir
    page = reports / ("index.html" if which == "index" else f"ds={report_run['shifted'].isoformat()}.html")
    seen = _open(browser, page)
    assert seen["errors"] == []
    assert seen["images"] >= 4 and seen["broken"] == []
    assert seen["title"].startswith("ehr-pipeline run report")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{page.stem}.png"
    shot.write_bytes(seen["png"])
    assert seen["png"][:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.mark.parametrize("which", ["index", "validation page"])
def test_browser_opens_the_data_docs_offline_styled_and_with_filled_tables(report_run, browser, which) -> None:
    docs = report_run["settings"].data_docs_dir
    page = docs / "index.html" if which == "index" else sorted((docs / "validations").rglob("*.html"))[-1]
    seen = _open(browser, page)
    assert seen["errors"] == []
    assert seen["broken"] == []
    assert seen["styled"] and seen["rows"] > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"data-docs-{which.replace(' ', '-')}.png").write_bytes(seen["png"])


def test_browser_reports_a_missing_image_as_broken(report_run, browser, tmp_path: Path) -> None:
    """The check itself: a page whose plot is missing is caught (the test could otherwise never fail)."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>t</title></head><body><img src="img/missing.png"></body></html>')
    seen = _open(browser, page)
    assert len(seen["broken"]) == 1 and seen["errors"]  # the failed load is also a console error
