import numpy as np
import pytest

from pipeline.nlp.windows import make_windows, sentence_starts


@pytest.mark.parametrize("n_tokens", [0, 1, 5, 37, 200, 1001])
@pytest.mark.parametrize("max_tokens,stride", [(8, 2), (30, 6), (254, 32)])
def test_windows_cover_every_token_once(n_tokens, max_tokens, stride):
    rng = np.random.default_rng(n_tokens)
    sents = np.unique(np.concatenate(([0], rng.integers(0, max(1, n_tokens), size=n_tokens // 7))))
    w = make_windows(n_tokens, sents, max_tokens, stride)
    assert ((w.end - w.start) <= max_tokens).all()
    owned = np.zeros(n_tokens, dtype=int)
    for a, b, s, e in zip(w.own_start, w.own_end, w.start, w.end, strict=True):
        assert s <= a <= b <= e
        owned[a:b] += 1
    assert (owned == 1).all()
    assert (np.diff(w.start) > 0).all()


def test_windows_prefer_sentence_boundaries():
    w = make_windows(30, np.array([0, 7, 12, 20, 26]), max_tokens=16, stride=4)
    assert w.start.tolist()[:2] == [0, 12] and w.end.tolist()[0] == 12


def test_windows_hard_cut_overlaps_and_splits_at_midpoint():
    w = make_windows(20, np.array([0]), max_tokens=10, stride=4)
    assert w.start.tolist() == [0, 6, 12] and w.end.tolist() == [10, 16, 20]
    # the overlapping tokens 6..9 go half to each window: farthest from an edge wins
    assert w.own_end.tolist()[0] == 8 and w.own_start.tolist()[1] == 8


def test_windows_sentence_starts_keep_wrapped_lines():
    text = "Pt denies\nchest pain. Fever\n\nno cough"
    offsets = np.array([[0, 2], [3, 9], [10, 15], [16, 20], [20, 21], [22, 27], [29, 31], [32, 37]])
    assert sentence_starts(text, offsets).tolist() == [0, 5, 6]


def test_case_types_keep_what_the_uncased_tokenizer_drops():
    import numpy as np

    from pipeline.nlp.windows import CASE_OTHER, CASE_TITLE, CASE_UPPER, case_types

    text = "Dr. Nash: NASH, nash; J. McGirr CT 3/14 Élodie"
    words = ["Dr", ".", "Nash", ":", "NASH", ",", "nash", ";", "J", ".", "McGirr", "CT", "3/14", "Élodie"]
    offsets, at = [], 0
    for w in words:
        at = text.index(w, at)
        offsets.append((at, at + len(w)))
        at += len(w)
    got = case_types(text, np.array(offsets, dtype=np.int64))
    want = [CASE_TITLE, CASE_OTHER, CASE_TITLE, CASE_OTHER, CASE_UPPER, CASE_OTHER, CASE_OTHER, CASE_OTHER,
            CASE_TITLE, CASE_OTHER, CASE_TITLE, CASE_UPPER, CASE_OTHER, CASE_TITLE]
    assert got.tolist() == want
    assert case_types("", np.zeros((0, 2), dtype=np.int64)).tolist() == []
