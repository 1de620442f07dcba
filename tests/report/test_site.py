"""The static report site (pipeline/report/site.py) from hand-built aggregates: pages, links, plots, alerts."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.contracts import arrow_schema
from pipeline.report.site import ReportData, page_name, write_site

D1, D2, D3 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)
#: icu_stays stands for an input table added to the contracts later: the pages list whatever tables they get
INPUTS = ("patients", "admissions", "notes", "icu_stays")


def _data(tmp_path: Path, *, drift_status: str = "warn") -> ReportData:
    counts = [{"table_name": t, "ds": D1 - timedelta(days=k), "row_count": 100 + k}
              for t in INPUTS for k in range(1, 8)]
    counts += [{"table_name": t, "ds": d, "row_count": n} for t in INPUTS for d, n in ((D1, 100), (D2, 90), (D3, 300))]
    counts += [{"table_name": "note_entities", "ds": d, "row_count": 900} for d in (D1, D2, D3)]
    started = datetime(2026, 1, 4, 2, 0, 0)
    stages = [{"ds": D3, "stage": stage, "status": "success", "started_at": started + timedelta(seconds=10 * i),
               "finished_at": started + timedelta(seconds=10 * i + 5 + i)}
              for i, stage in enumerate(("extract", "validate", "ner[part-0]", "ner[part-1]", "load"))]
    drift = [{"ds": D3, "metric": "risk_input:admission_type", "reference_start": D1, "reference_end": D2,
              "reference_rows": 190, "current_rows": 300, "bins": 9, "value": 2.25, "threshold": 0.5,
              "status": drift_status},
             {"ds": D3, "metric": "ner:label", "reference_start": D1, "reference_end": D2, "reference_rows": 1800,
              "current_rows": 900, "bins": 3, "value": 0.01, "threshold": 0.25, "status": "ok"}]
    docs = tmp_path / "data_docs" / "index.html"
    docs.parent.mkdir(parents=True)
    docs.write_text("<html></html>")
    return ReportData(
        first=D1, last=D3, page_days=[D1, D2, D3], counted_tables=(*INPUTS, "note_entities"), input_tables=INPUTS,
        trailing_days=7,
        table_counts=pa.Table.from_pylist(counts),
        quarantine=pa.Table.from_pylist([{"ds": D3, "source_table": "admissions", "rule": "discharge_before_admission",
                                          "n": 2}]),
        quality=pa.Table.from_pylist([{"ds": D3, "table_name": t, "expectations_evaluated": 10,
                                       "expectations_passed": 9, "pass_rate": 0.9, "rows_extracted": 300,
                                       "rows_passed": 298, "rows_quarantined": 2, "validate_status": "success"}
                                      for t in INPUTS]),
        entities=pa.Table.from_pylist([{"ds": d, "label": label, "n": n, "negated": n // 10}
                                       for d in (D1, D2, D3) for label, n in (("PROBLEM", 600), ("TEST", 300))]),
        risk_bands=pa.Table.from_pylist([{"ds": D3, "risk_band": b, "n": n} for b, n in (("low", 200), ("high", 100))]),
        readmit=pa.Table.from_pylist([{"ds": D3, "readmit_30d_prob": p / 100} for p in range(0, 100, 3)]),
        stages=pa.Table.from_pylist(stages),
        drift=pa.Table.from_pylist(drift, schema=arrow_schema("drift_metrics").remove(
            arrow_schema("drift_metrics").get_field_index("run_id"))),
        data_docs=docs,
    )


def _site(tmp_path: Path, **kwargs) -> tuple[Path, Path]:
    out = tmp_path / "reports"
    return out, write_site(_data(tmp_path, **kwargs), out, pages_from=D1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The site of :func:`_data`, written once for the tests that only read it."""
    return _site(tmp_path_factory.mktemp("site"))


@pytest.mark.slow
def test_site_writes_an_index_and_a_page_per_day_linked_both_ways(site: tuple[Path, Path]) -> None:
    out, index = site
    assert index == out / "index.html"
    html = index.read_text()
    for day in (D1, D2, D3):
        assert (out / page_name(day)).is_file()
        assert f'href="{page_name(day)}"' in html
    day3 = (out / page_name(D3)).read_text()
    assert 'href="index.html"' in day3 and f'href="{page_name(D2)}"' in day3
    assert 'href="../data_docs/index.html"' in day3  # the Data Docs, relative: the workdir can move


@pytest.mark.parametrize("page", ["index.html", page_name(D3)])
def test_site_pages_are_self_contained_and_every_image_exists(site: tuple[Path, Path], page: str) -> None:
    out, _ = site
    html = (out / page).read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from the network
    assert "<script" not in html and "<link" not in html  # inline CSS only, no JavaScript
    images = re.findall(r'<img src="([^"]+)"', html)
    assert images
    for src in images:
        assert (out / src).is_file() and (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src


def test_site_day_page_shows_the_numbers_people_look_for(site: tuple[Path, Path]) -> None:
    out, _ = site
    day3 = (out / page_name(D3)).read_text()
    text = re.sub(r"<[^>]+>", " ", day3)
    text = re.sub(r"\s+", " ", text)
    # rows against the trailing median of the 7 days before (D3: 300 vs median of 90, 100, 101..105)
    assert "icu_stays 300 102 2.94" in text
    assert "admissions discharge_before_admission 2" in text  # quarantine by table and rule
    assert "9 / 10 90.0%" in text  # expectations passed, pass rate
    assert "PROBLEM 600 2.00 10.0%" in text  # entities per note (300 notes) and the share negated
    assert "high 100 33.3%" in text  # admissions per risk band
    assert "ner 2026-01-04 02:00:20 18.0 2 success" in text  # the mapped parts as one stage: 20 s to 38 s
    assert "Drift: risk_input:admission_type (PSI 2.250 &gt; 0.500, warn )" in text


@pytest.mark.slow
def test_site_without_drift_shows_no_alert_and_index_says_none(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    index = write_site(_data(tmp_path, drift_status="ok"), out, pages_from=D3)  # the last day's page only
    assert not (out / page_name(D2)).exists()
    assert "Drift:" not in (out / page_name(D3)).read_text()
    assert "drifted" not in index.read_text()
