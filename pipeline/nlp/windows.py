"""Cut a tokenised note into model-sized windows, at sentence boundaries where possible, with overlap.

Each window also records the token range it *owns*: where two windows overlap, the shared tokens are split
at the midpoint, so every token's prediction comes from the window in which it sits farthest from an edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_SENTENCE_END = np.array([ord(c) for c in ".!?;:"], dtype=np.uint32)
_NEWLINE = np.array([ord("\n"), ord("\r")], dtype=np.uint32)


@dataclass(frozen=True)
class NoteTokens:
    """One note after tokenisation (no special tokens): ids, char offsets into the note, word index per token."""

    ids: np.ndarray  # int64 (n,)
    offsets: np.ndarray  # int64 (n, 2), Python str indices
    word_ids: np.ndarray  # int64 (n,)
    types: np.ndarray | None = None  # int64 (n,) token type ids (case_types), None for a model without them

    def __len__(self) -> int:
        return int(self.ids.shape[0])


# Token types that carry the letter case an uncased tokenizer drops (a model card's "token_types": "case").
CASE_OTHER, CASE_TITLE, CASE_UPPER = 0, 1, 2
CASE_TYPE_COUNT = 3
TOKEN_TYPE_SCHEMES = ("case",)
_LETTER_RUN = re.compile(r"[^\W\d_]+")


def case_types(text: str, offsets: np.ndarray) -> np.ndarray:
    """Per token, the case of the letter run it sits in: CASE_TITLE ("Nash", "McGirr", an initial "J"),
    CASE_UPPER ("NASH", "CT": two or more letters, all capitals), CASE_OTHER (lower case, digits, punctuation).

    An uncased WordPiece model reads "Nash", "NASH" and "nash" as one token; the type keeps the difference, and
    the words around a token tell the model whether the whole line is in capitals.
    """
    shape = np.zeros(len(text) + 1, dtype=np.int64)
    for match in _LETTER_RUN.finditer(text):
        word = match.group(0)
        if word[0].isupper():
            kind = CASE_UPPER if len(word) > 1 and word.isupper() else CASE_TITLE
            shape[match.start() : match.end()] = kind
    if offsets.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return shape[np.minimum(offsets[:, 0], len(text))]


def codepoints(text: str) -> np.ndarray:
    """The note as an array of code points, indexed like the Python str."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def sentence_starts(text: str, offsets: np.ndarray) -> np.ndarray:
    """Token indices that begin a sentence.

    A sentence starts after sentence-final punctuation (. ! ? ; :) followed by space, after a blank line, and
    after a line break unless the next line continues in lower case (hard-wrapped text keeps its sentence).
    The note is split once: the same boundaries cut windows and bound ConText's scopes.

    >>> text = "Chest pain. No fever\\nCough and\\nwheeze"
    >>> offsets = np.array([[0, 5], [6, 10], [10, 11], [12, 14], [15, 20], [21, 26], [27, 30], [31, 37]])
    >>> sentence_starts(text, offsets).tolist()
    [0, 3, 5]
    """
    n = offsets.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cps = codepoints(text)
    newline_cum = np.concatenate(([0], np.cumsum(np.isin(cps, _NEWLINE))))
    prev_end = offsets[:-1, 1]
    cur_start = offsets[1:, 0]
    newlines = newline_cum[cur_start] - newline_cum[prev_end]
    next_char = cps[cur_start]
    continues_lower = (next_char >= ord("a")) & (next_char <= ord("z"))
    line_break = (newlines >= 2) | ((newlines == 1) & ~continues_lower)
    last_char = cps[np.maximum(prev_end - 1, 0)]
    after_stop = np.isin(last_char, _SENTENCE_END) & (cur_start > prev_end)
    starts = np.flatnonzero(line_break | after_stop) + 1
    return np.concatenate(([0], starts)).astype(np.int64)


@dataclass(frozen=True)
class Windows:
    """Token windows of one note: [start, end) to feed the model, [own_start, own_end) to keep predictions from."""

    start: np.ndarray
    end: np.ndarray
    own_start: np.ndarray
    own_end: np.ndarray

    def __len__(self) -> int:
        return int(self.start.shape[0])


def make_windows(n_tokens: int, sent_starts: np.ndarray, max_tokens: int, stride: int) -> Windows:
    """Windows of at most `max_tokens` tokens covering `n_tokens`.

    A window ends at the last sentence start in its second half when there is one, else it is cut hard; the
    next window then begins `stride` tokens earlier (at a sentence start in that overlap where possible) so
    tokens near a hard cut are seen with context on both sides.

    >>> w = make_windows(10, np.array([0, 4, 8]), max_tokens=6, stride=2)
    >>> [w.start.tolist(), w.end.tolist(), w.own_start.tolist(), w.own_end.tolist()]
    [[0, 4], [4, 10], [0, 4], [4, 10]]
    >>> w = make_windows(10, np.array([0]), max_tokens=6, stride=2)
    >>> [w.start.tolist(), w.end.tolist(), w.own_start.tolist(), w.own_end.tolist()]
    [[0, 4], [6, 10], [0, 5], [5, 10]]
    """
    if max_tokens < 2:
        raise ValueError("max_tokens must be at least 2")
    stride = max(0, min(stride, max_tokens // 2 - 1))
    starts: list[int] = []
    ends: list[int] = []
    start = 0
    while True:
        limit = start + max_tokens
        if limit >= n_tokens:
            starts.append(start)
            ends.append(n_tokens)
            break
        lo = np.searchsorted(sent_starts, start + max_tokens // 2, side="left")
        hi = np.searchsorted(sent_starts, limit, side="right")
        at_sentence = hi > lo
        end = int(sent_starts[hi - 1]) if at_sentence else limit
        starts.append(start)
        ends.append(end)
        # Overlap: a sentence start inside [end - stride, end) if any; no overlap needed when cut at a sentence.
        k = np.searchsorted(sent_starts, end - stride, side="left")
        if k < len(sent_starts) and sent_starts[k] < end and sent_starts[k] > start:
            nxt = int(sent_starts[k])
        else:
            nxt = end if at_sentence else end - stride
        start = max(nxt, start + 1)
    start_arr = np.asarray(starts, dtype=np.int64)
    end_arr = np.asarray(ends, dtype=np.int64)
    own_start = start_arr.copy()
    own_end = end_arr.copy()
    if len(starts) > 1:
        mid = (start_arr[1:] + end_arr[:-1] + 1) // 2
        mid = np.clip(mid, start_arr[1:], end_arr[:-1])
        own_end[:-1] = np.maximum(mid, start_arr[1:])
        own_start[1:] = own_end[:-1]
    return Windows(start_arr, end_arr, own_start, own_end)
