"""PSI drift checks (pipeline/report/drift.py): binning, smoothing, the small-sample noise floor and statuses."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from pipeline.contracts import arrow_schema
from pipeline.report.drift import (
    PSEUDO_COUNT,
    Sample,
    Shares,
    categorical_shares,
    counted_shares,
    drift_rows,
    noise_threshold,
    numeric_shares,
    psi,
)

DS = date(2026, 1, 15)


def _psi_by_hand(reference: list[float], current: list[float]) -> float:
    ref = [c + PSEUDO_COUNT for c in reference]
    cur = [c + PSEUDO_COUNT for c in current]
    p = [c / sum(cur) for c in cur]
    q = [r / sum(ref) for r in ref]
    return sum((a - b) * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_drift_psi_is_zero_for_the_same_mix_and_grows_with_the_shift() -> None:
    reference = pa.array(["EW EMER."] * 870 + ["ELECTIVE"] * 130)
    same = psi(categorical_shares(reference, pa.array(["EW EMER."] * 87 + ["ELECTIVE"] * 13)))
    half = psi(categorical_shares(reference, pa.array(["EW EMER."] * 40 + ["ELECTIVE"] * 60)))
    most = psi(categorical_shares(reference, pa.array(["EW EMER."] * 10 + ["ELECTIVE"] * 90)))
    assert same == pytest.approx(0.0, abs=1e-3)
    assert 0.25 < half < most
    assert half == pytest.approx(_psi_by_hand([870, 130], [40, 60]))


def test_drift_categorical_bins_are_the_union_of_categories_with_nulls_as_one() -> None:
    shares = categorical_shares(pa.array(["a", "b", None]), pa.chunked_array([["b", "c"], ["c", None]]))
    # sorted categories: (null), a, b, c
    assert shares.reference.tolist() == [1, 1, 1, 0]
    assert shares.current.tolist() == [1, 0, 1, 2]
    assert math.isfinite(psi(shares))  # a category unseen on one side does not make PSI infinite


def test_drift_numeric_bins_are_cut_at_the_reference_deciles() -> None:
    reference = pa.array(np.arange(100, dtype=float))  # deciles 9, 19, ... 89 (right-closed bins)
    shares = numeric_shares(reference, pa.array([0.0, 5.0, 50.0, 99.0, 150.0, None]))
    assert shares.bins == 10
    assert shares.reference.tolist() == [10] * 10
    assert shares.current.tolist() == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]  # the null is dropped
    # a discrete score: repeated deciles merge, one bin per value taken and one above the largest
    discrete = numeric_shares(pa.array([0] * 50 + [1] * 30 + [2] * 20), pa.array([0, 2, 2, 3]))
    assert discrete.reference.tolist() == [50, 30, 20, 0] and discrete.current.tolist() == [1, 0, 2, 1]


def test_drift_counted_shares_match_shares_from_values() -> None:
    from_values = categorical_shares(pa.array(["x", "x", "y"]), pa.array(["y", "z"]))
    counted = counted_shares({"x": 2, "y": 1}, {"y": 1, "z": 1})
    assert counted.reference.tolist() == from_values.reference.tolist()
    assert counted.current.tolist() == from_values.current.tolist()


def test_drift_noise_threshold_shrinks_with_sample_size() -> None:
    small = Shares(np.full(10, 100.0), np.full(10, 4.0))  # 40 rows today
    large = Shares(np.full(10, 10_000.0), np.full(10, 400.0))
    assert noise_threshold(small) > 0.25 > noise_threshold(large) > 0
    assert noise_threshold(Shares(np.array([5.0]), np.array([3.0]))) == 0.0  # one bin: nothing to compare


def test_drift_rows_statuses_thresholds_and_contract() -> None:
    big_ref = pa.array(["EW EMER."] * 870 + ["ELECTIVE"] * 130)
    samples = [
        Sample("risk_input:admission_type", categorical_shares(big_ref, pa.array(["EW EMER."] * 40 + ["ELECTIVE"] * 60))),
        Sample("risk_input:same", categorical_shares(big_ref, pa.array(["EW EMER."] * 87 + ["ELECTIVE"] * 13))),
        Sample("risk_output:few", categorical_shares(big_ref, pa.array(["ELECTIVE"] * 5))),
        Sample("ner:label", counted_shares({}, {"PROBLEM": 30})),
    ]
    rows = drift_rows(DS, samples, reference_start=date(2026, 1, 1), reference_end=date(2026, 1, 14),
                      psi_threshold=0.25, min_rows=20, on_drift="fail", run_id="run-1")
    assert rows.schema == arrow_schema("drift_metrics")
    by_metric = {r["metric"]: r for r in rows.to_pylist()}
    assert by_metric["risk_input:admission_type"]["status"] == "fail"
    assert by_metric["risk_input:same"]["status"] == "ok"
    # five rows: PSI is large, but a sample that small is judged too small, not drifted
    assert by_metric["risk_output:few"]["status"] == "too_few_rows" and by_metric["risk_output:few"]["value"] > 1
    assert by_metric["ner:label"]["value"] is None and by_metric["ner:label"]["status"] == "too_few_rows"
    for row in rows.to_pylist():
        assert row["threshold"] >= 0.25
        assert (row["reference_start"], row["reference_end"], row["run_id"]) == (date(2026, 1, 1), date(2026, 1, 14),
                                                                                 "run-1")
    assert by_metric["risk_input:admission_type"]["reference_rows"] == 1000
    assert by_metric["risk_input:admission_type"]["current_rows"] == 100
    warned = drift_rows(DS, samples[:1], reference_start=date(2026, 1, 1), reference_end=date(2026, 1, 14),
                        psi_threshold=0.25, min_rows=20, on_drift="warn", run_id="run-1")
    assert warned.column("status").to_pylist() == ["warn"]
    # a PSI threshold above the shift: not drifted
    lenient = drift_rows(DS, samples[:1], reference_start=date(2026, 1, 1), reference_end=date(2026, 1, 14),
                         psi_threshold=5.0, min_rows=20, on_drift="fail", run_id="run-1")
    assert lenient.column("status").to_pylist() == ["ok"]
