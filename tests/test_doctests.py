"""Every worked example in a pipeline module's docstrings runs as a doctest (modules found by their ``>>>``,
usage-only examples marked +SKIP aside)."""

from __future__ import annotations

import doctest
import importlib

import pytest

from pipeline.config import REPO_ROOT

PACKAGE = REPO_ROOT / "pipeline"
MODULES = sorted(
    ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    for path in PACKAGE.rglob("*.py")
    if any(">>> " in line and "+SKIP" not in line for line in path.read_text(encoding="utf-8").splitlines())
)


def test_doctests_found_in_the_expected_modules() -> None:
    assert {"pipeline.risk.indices", "pipeline.nlp.windows", "pipeline.bench.sections", "pipeline.synth.tables",
            "pipeline.synth.notes"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests_worked_examples(name: str) -> None:
    module = importlib.import_module(name.removesuffix(".__init__"))
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
