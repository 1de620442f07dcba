import numpy as np
import pytest

from pipeline.nlp.batching import build_batch, plan_batches, prefetch


def test_batching_respects_token_budget_and_sorts():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 130, size=500)
    budget = 1024
    batches = plan_batches(lengths, budget)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(500))
    for b in batches:
        assert len(b) * lengths[b].max() <= budget or len(b) == 1
    widths = [lengths[b].max() for b in batches]
    assert widths == sorted(widths)
    padding = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
    assert padding / lengths.sum() < 0.05


def test_batching_oversize_window_gets_own_batch():
    assert [b.tolist() for b in plan_batches(np.array([50, 2000, 10]), 100)] == [[2, 0], [1]]


def test_batching_build_and_split():
    batch = build_batch([np.array([5, 6, 7]), np.array([8])], np.array([3, 4]), cls_id=1, sep_id=2, pad_id=0)
    assert batch.input_ids.tolist() == [[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]]
    assert batch.attention_mask.sum() == 8 and batch.tokens == 8
    first, second = batch.split()
    assert first.window_index.tolist() == [3] and second.input_ids.tolist() == [[1, 8, 2]]


def test_batching_prefetch_order_and_errors():
    assert list(prefetch(iter(range(10)), depth=2)) == list(range(10))

    def broken():
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(prefetch(broken()))


def test_batching_prefetch_stops_when_consumer_leaves():
    it = prefetch(iter(range(1000)), depth=1)
    assert next(it) == 0
    it.close()
