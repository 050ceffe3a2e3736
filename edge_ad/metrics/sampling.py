"""A uniform sample of a stream, shared by the pixel metrics so that neither holds every pixel of a test set."""

from __future__ import annotations

import numpy as np


class UniformSample:
    """A uniform sample without replacement of at most ``capacity`` items from a stream: every item gets a
    random key and the ``capacity`` smallest keys stay. An item is a value (``add`` a [N] array) or a row of
    values that stay together (``add`` a [N, K] array, e.g. a pixel's value and its weight). New items are
    buffered and merged in bulk, so the cost per update is one random draw and a comparison per item."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.rng = rng
        self.seen = 0
        self._items: np.ndarray | None = None
        self._keys = np.empty(0, np.float64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0
        self._cutoff = np.inf  # items with a key above the current k-th smallest can never enter

    def add(self, items: np.ndarray) -> None:
        if items.shape[0] == 0:
            return
        self.seen += items.shape[0]
        keys = self.rng.random(items.shape[0])
        if np.isfinite(self._cutoff):
            keep = keys < self._cutoff
            items, keys = items[keep], keys[keep]
        self._pending.append((items.astype(np.float32, copy=False), keys))
        self._pending_size += items.shape[0]
        if self._pending_size >= self.capacity:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        held = [] if self._items is None else [self._items]
        items = np.concatenate([*held, *(v for v, _ in self._pending)])
        keys = np.concatenate([self._keys, *(k for _, k in self._pending)])
        self._pending, self._pending_size = [], 0
        if keys.size > self.capacity:
            idx = np.argpartition(keys, self.capacity - 1)[: self.capacity]
            items, keys = items[idx], keys[idx]
            self._cutoff = float(keys.max())
        self._items, self._keys = items, keys

    def sample(self) -> np.ndarray:
        """The kept items, float32, in no particular order; empty (shape [0]) before any was added."""
        self._merge()
        return np.empty(0, np.float32) if self._items is None else self._items
