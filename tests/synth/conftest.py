from datetime import date

import pytest

from pipeline.synth import generate

START = date(2024, 3, 1)


@pytest.fixture(scope="session")
def mimic4_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("m4")
    summary = generate(out, layout="mimic4", patients=300, start=START, days=3, seed=11)
    return out, summary


@pytest.fixture(scope="session")
def mimic3_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("m3")
    summary = generate(out, layout="mimic3", patients=120, start=START, days=2, seed=11)
    return out, summary


@pytest.fixture(scope="session")
def large_dir(tmp_path_factory):
    """Enough patients for outcome statistics (fast: ~5 s)."""
    out = tmp_path_factory.mktemp("large")
    summary = generate(out, layout="mimic4", patients=1000, start=START, days=1, seed=5)
    return out, summary
