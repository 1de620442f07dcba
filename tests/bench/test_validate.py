"""The validation benchmark: a synthetic labs day through validate_batch, its own section of BENCHMARKS.md."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from pipeline.bench.validate import ADMISSIONS, BENCH_DS, run_validation_benchmark
from pipeline.synth.tables import labs_day


def test_validate_writes_its_section_and_keeps_the_others(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## NER\n\nkeep me\n")
    result = run_validation_benchmark(rows=20_000, out_md=out)
    assert result["rows"] == 20_000 and result["rows_passed"] + result["rows_quarantined"] == 20_000
    # the rows labs_day plants bad are quarantined, and nothing else: non-finite values, unknown admissions
    labs, _ = labs_day(20_000, BENCH_DS, admissions=ADMISSIONS)
    planted = int(np.isnan(labs.column("valuenum").to_numpy(zero_copy_only=False)).sum())
    planted += pc.sum(pc.equal(labs.column("hadm_id"), 1)).as_py() or 0
    assert result["rows_quarantined"] == planted and planted > 10
    run_validation_benchmark(rows=20_000, out_md=out)
    text = out.read_text()
    assert text.count("## Validation") == 1 and "keep me" in text
    assert "`ehr-pipeline bench validate`" in text and "pipeline.bench.validate.run_validation_benchmark" in text
