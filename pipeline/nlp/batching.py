"""Token-budget batching of windows (sorted by length, minimal padding) and a background prefetcher."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def plan_batches(lengths: np.ndarray, token_budget: int, max_batch: int = 512) -> list[np.ndarray]:
    """Group window indices into batches whose padded size (rows × longest row) stays within `token_budget`.

    Windows are sorted by length first, so each batch holds windows of similar length and padding is small.
    A single window longer than the budget still gets a batch of its own.

    >>> [b.tolist() for b in plan_batches(np.array([5, 3, 8, 4]), token_budget=10)]
    [[1, 3], [0], [2]]
    """
    order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    begin = 0
    n = len(order)
    while begin < n:
        end = begin + 1
        # Sorted ascending: the padded width of [begin, end] is the length of the last window.
        while end < n and end - begin < max_batch and (end - begin + 1) * int(lengths[order[end]]) <= token_budget:
            end += 1
        batches.append(order[begin:end])
        begin = end
    return batches


@dataclass
class TokenBatch:
    """Model inputs for one batch of windows, padded to the batch's longest window (+ [CLS]/[SEP])."""

    input_ids: np.ndarray  # int64 (B, L)
    attention_mask: np.ndarray  # int64 (B, L)
    window_index: np.ndarray  # rows → window indices in the chunk
    token_type_ids: np.ndarray | None = None  # int64 (B, L) for a model with token types ("case"), else None

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    def split(self) -> tuple[TokenBatch, TokenBatch]:
        """Halve the batch by rows (used on out-of-memory), trimming padding columns each half no longer needs."""
        half = max(1, len(self.window_index) // 2)
        parts = []
        for rows in (slice(0, half), slice(half, None)):
            mask = self.attention_mask[rows]
            width = int(mask.sum(axis=1).max()) if mask.size else 0
            types = None if self.token_type_ids is None else self.token_type_ids[rows, :width]
            parts.append(TokenBatch(self.input_ids[rows, :width], mask[:, :width], self.window_index[rows], types))
        return parts[0], parts[1]


def build_batch(
    window_ids: list[np.ndarray], window_index: np.ndarray, cls_id: int, sep_id: int, pad_id: int,
    window_types: list[np.ndarray] | None = None,
) -> TokenBatch:
    """Pad windows' content ids into one batch, each framed by [CLS] … [SEP] (token type 0 on both and on
    padding when `window_types` are given)."""
    width = max(len(ids) for ids in window_ids) + 2
    input_ids = np.full((len(window_ids), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(window_ids), width), dtype=np.int64)
    types = None if window_types is None else np.zeros((len(window_ids), width), dtype=np.int64)
    for row, ids in enumerate(window_ids):
        n = len(ids)
        input_ids[row, 0] = cls_id
        input_ids[row, 1 : n + 1] = ids
        input_ids[row, n + 1] = sep_id
        attention_mask[row, : n + 2] = 1
        if types is not None:
            types[row, 1 : n + 1] = window_types[row]
    return TokenBatch(input_ids, attention_mask, window_index, types)


_DONE = object()


def prefetch(produce: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate `produce` in a background thread, keeping up to `depth` items ready.

    Tokenisation (Rust, releases the GIL) then overlaps with the model's forward pass on the previous item.
    An exception in the producer is re-raised in the consumer; closing the iterator stops the producer.
    """
    items: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in produce:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    thread = threading.Thread(target=run, name="ner-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
