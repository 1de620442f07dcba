"""The NER benchmark: runs (a), (b), (c) and the precision switches on a tiny model and writes its section."""

from __future__ import annotations

import pytest

from pipeline.bench.ner import _difference_cause, matmul_rates, run_ner_benchmark
from pipeline.nlp.fused import kernels_available


def test_ner_difference_causes_from_text():
    text = "pt has hypertension and dm2 noted"
    # "hyper" + "tension": a fragment that ends inside a word
    assert _difference_cause(text, (7, 12, "PROBLEM"), set(), []) == "sub-word fragment"
    assert _difference_cause(text, (7, 19, "PROBLEM"), {(7, 27, "PROBLEM")}, []) == "boundary"
    assert _difference_cause(text, (7, 19, "PROBLEM"), {(7, 19, "TEST")}, []) == "label"
    assert _difference_cause(text, (24, 27, "PROBLEM"), set(), [20]) == "window border"
    assert _difference_cause(text, (24, 27, "PROBLEM"), set(), [200]) == "missing"


def test_ner_matmul_rate_is_the_fastest_library():
    rates = matmul_rates(size=256, repeats=2, rounds=1)
    assert "torch.mm" in rates and all(rate > 0 for rate in rates.values())
    assert ("oneDNN linear" in rates) == kernels_available()


@pytest.mark.slow
def test_ner_writes_section_with_switches(tiny_model_dir, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## NER\nold numbers\n\n## Validation\nkept\n")
    from pipeline.config import REPO_ROOT

    result = run_ner_benchmark(tiny_model_dir, n_notes=6, out_md=out, eval_notes=3, switches=("bf16", "int8"),
                               passes=2, matmul_size=256, real_dir=REPO_ROOT / "tests" / "fixtures" / "ctakes-dev")
    text = out.read_text()
    assert "old numbers" not in text and "## Validation\nkept" in text
    assert "(a) naive" in text and "(c) our whole stage" in text and "bf16 autocast" in text
    assert "`ehr-pipeline bench ner --notes 6`" in text and "tiny-ner 0.0.1-test" in text
    assert result["b"]["seconds"] > 0 and result["compute"]["b_share_of_bound"] > 0
    agreement = result["agreement"]
    assert sum(agreement["causes"]["naive only"].values()) == agreement["naive_only"]
    assert sum(agreement["causes"]["ours only"].values()) == agreement["ours_only"]
    shares = result["forward_time_shares"]["shares"]
    assert abs(sum(shares.values()) - 1) < 1e-6 and any(g.startswith("GEMM") for g in shares) and "Where a forward pass's time goes" in text
    assert len(result["b"]["pass_seconds"]) == 2 and result["b"]["seconds"] == pytest.approx(
        sum(result["b"]["pass_seconds"]) / 2)
    if kernels_available():  # (b) ran the fused forward; the plain transformers forward is measured beside it
        assert result["b"]["fused"] and result["b_plain"]["same_entities_notes"] == 6
        assert "EHR_NER_FUSED_CPU=false" in text
    switch = result["switches"][0]
    assert switch["precision"] == "bf16" and "overlap_f1_change" in switch
    int8 = result["switches"][1]
    assert int8["precision"] == "int8" and "real_overlap_f1_change" in int8 and "speedup_vs_b" in int8
    assert "int8 dynamic quantization of nn.Linear" in text and "Real-dev F1: 5 Anafora-annotated" in text
