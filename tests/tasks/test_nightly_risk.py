"""The risk task (pipeline/tasks/nightly.py) on one validated part: run record detail, deceased admissions,
band settings."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from pipeline import lake
from pipeline.config import load_settings
from pipeline.contracts import arrow_schema
from pipeline.tasks import nightly
from pipeline.tasks.runs import PipelineError, new_run_id
from tests.sources.conftest import ADMISSIONS, FILES, write_folder

D2 = date(2026, 1, 2)


def _settings(tmp_path: Path, model_dir: Path, **overrides):
    files = dict(FILES)
    # admission 200 ends in death in hospital
    files["hosp/admissions.csv.gz"] = ADMISSIONS.replace(
        "2,200,2025-12-30 09:00:00,2026-01-02 15:30:00,,ELECTIVE,P2,PHYSICIAN REFERRAL,HOME,Private,ENGLISH,SINGLE,BLACK,,,0",
        "2,200,2025-12-30 09:00:00,2026-01-02 15:30:00,2026-01-02 15:30:00,ELECTIVE,P2,PHYSICIAN REFERRAL,DIED,"
        "Private,ENGLISH,SINGLE,BLACK,,,1",
    )
    source = write_folder(tmp_path / "src", files)
    return load_settings(
        workdir=tmp_path / "w", source_path=source, ner_enabled=False, risk_model_path=model_dir, **overrides
    )


def test_nightly_risk_records_icd_counts_and_scores_deaths_as_deceased(tmp_path: Path, trained: tuple) -> None:
    _, _, model_dir = trained
    settings = _settings(tmp_path, model_dir)
    run_id = new_run_id(D2)
    nightly.extract(D2, run_id=run_id, settings=settings)
    nightly.validate(D2, run_id=run_id, settings=settings)
    # validation quarantines malformed codes; the risk stage must still count (and survive) any it is given,
    # e.g. rows validated under older rules
    root = settings.lake_dir
    diagnoses = lake.read_partition(root, nightly.VALIDATED, "diagnoses", D2, arrow_schema("diagnoses"))
    extra = pa.Table.from_pylist(
        [{**diagnoses.slice(0, 1).to_pylist()[0], "seq_num": 9, "icd_code": "I50.23"}],
        schema=diagnoses.schema,
    )
    lake.write_partition(root, nightly.VALIDATED, "diagnoses", D2, pa.concat_tables([diagnoses, extra]))

    assert nightly.risk(D2, 0, run_id=run_id, settings=settings) == {"admissions": 2, "scored": 2}
    con = duckdb.connect(str(settings.workdir_abs / "warehouse.duckdb"), read_only=True)
    detail = con.execute(
        "SELECT detail FROM ehr.pipeline_runs WHERE stage = 'risk[part-0]' AND ds = ?", [D2]
    ).fetchone()[0]
    con.close()
    counts = json.loads(detail)
    assert counts["malformed_icd_codes"] == 1 and counts["diagnoses"] == diagnoses.num_rows + 1
    assert counts["unknown_icd_version"] == 0 and counts["deceased"] == 1
    assert "unmapped_icd_codes" in counts
    scored = lake.read_partition(root, nightly.ENRICHED, "admission_risk", D2).to_pylist()
    bands = {r["hadm_id"]: r["risk_band"] for r in scored}
    assert bands[200] == "deceased" and bands[100] in {"low", "medium", "high"}


@pytest.mark.parametrize(("medium", "high"), [(0.2, 0.2), (0.0, 0.3)])
def test_nightly_risk_refuses_band_settings_that_empty_a_band(
    tmp_path: Path, trained: tuple, medium: float, high: float
) -> None:
    _, _, model_dir = trained
    settings = _settings(tmp_path, model_dir, risk_band_medium=medium, risk_band_high=high)
    with pytest.raises(PipelineError, match=r"R013.*EHR_RISK_BAND_MEDIUM.*EHR_RISK_BAND_HIGH"):
        nightly.risk(D2, 0, run_id="r", settings=settings)
