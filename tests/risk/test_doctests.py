"""The worked examples in the risk modules' docstrings run as doctests."""

from __future__ import annotations

import doctest

import pytest

from pipeline.risk import indices, labels, metrics


@pytest.mark.parametrize("module", [indices, labels, metrics], ids=lambda m: m.__name__)
def test_doctests_worked_examples(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
