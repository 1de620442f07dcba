"""The synthetic generator's readmission risk depends on factors known at discharge that LACE cannot see."""

from __future__ import annotations

from pipeline.synth.clinical import readmission_logit

# one patient as LACE sees him: 4 days, acute admission, Charlson 2
LACE_INPUTS = {"charlson": 2, "los_days": 4.0, "emergency": True}
HEALTHY = {
    "age": 65,
    "n_prior": 0,
    "conditions": {},
    "admission_labs": {"albumin": 4.0},
    "discharge_labs": {"creatinine": 0.9, "sodium": 140.0, "hemoglobin": 13.5},
    "n_drugs": 9,
    "disposition": "HOME",
}


def logit(**changes) -> float:
    return readmission_logit(**LACE_INPUTS, **{**HEALTHY, **changes})


def test_synth_readmission_rises_with_factors_beyond_lace() -> None:
    base = logit()
    # each factor raises the risk with LACE's inputs held fixed
    assert logit(discharge_labs={"creatinine": 2.4, "sodium": 140.0, "hemoglobin": 13.5}) > base + 0.5
    assert logit(discharge_labs={"creatinine": 0.9, "sodium": 130.0, "hemoglobin": 13.5}) > base + 0.5
    assert logit(discharge_labs={"creatinine": 0.9, "sodium": 140.0, "hemoglobin": 9.0}) > base + 0.5
    assert logit(admission_labs={"albumin": 2.8}) > base + 0.5
    assert logit(conditions={"opioid": 0}) > base + 0.5  # no Charlson points at all
    assert logit(n_drugs=15) > base + 0.5
    assert logit(age=85) > base + 0.5
    assert logit(n_prior=3) > base + 0.5
    # normal discharge labs add nothing; in dialysis a high creatinine is the baseline, not a warning
    assert logit(discharge_labs={"creatinine": 1.1, "sodium": 138.0, "hemoglobin": 12.0}) == base
    esrd = logit(conditions={"esrd": 0})
    assert (
        logit(conditions={"esrd": 0}, discharge_labs={"creatinine": 7.0, "sodium": 140.0, "hemoglobin": 13.5})
        == esrd
    )


def test_synth_readmission_depends_less_on_lace_inputs_than_on_the_rest() -> None:
    lace_worst = readmission_logit(**{**HEALTHY, "charlson": 6, "los_days": 14.0, "emergency": True})
    lace_best = readmission_logit(**{**HEALTHY, "charlson": 0, "los_days": 1.0, "emergency": False})
    beyond = logit(
        conditions={"chf": 0, "depression": 0},
        discharge_labs={"creatinine": 2.0, "sodium": 133.0, "hemoglobin": 10.0},
        n_drugs=14,
    )
    assert beyond - logit() > 2 * (lace_worst - lace_best)
