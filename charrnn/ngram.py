"""A smoothed character n-gram model: the baseline the network has to beat.

Interpolated Kneser-Ney (Chen & Goodman's interpolated form with one absolute discount D = 0.75 per
order): the highest order uses raw counts, lower orders continuation counts (in how many distinct
contexts a string follows another character), and the unigram interpolates with the uniform
distribution over the vocabulary, so every character the vocabulary holds gets some probability.
A context never seen passes all its mass to the next lower order.

Everything is NumPy over integer keys (an n-gram of ids read as a number in base V), so fitting a
million characters at order 8 takes a few seconds and no Python dictionaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import CharRNNError

DISCOUNT = 0.75
MAX_ORDER = 20


@dataclass
class _Order:
    keys: np.ndarray  # sorted unique keys of the k-grams (context * V + char)
    counts: np.ndarray  # their counts (raw at the top order, continuation counts below)
    contexts: np.ndarray  # sorted unique context keys (key // V)
    totals: np.ndarray  # sum of counts per context
    types: np.ndarray  # distinct characters seen after each context


def _grams(ids: np.ndarray, k: int, base: int) -> np.ndarray:
    """Key of the k-gram ending at every position t >= k-1 (row j ends at t = j + k - 1)."""
    keys = ids[: len(ids) - k + 1].copy()
    for j in range(1, k):
        keys = keys * base + ids[j : len(ids) - k + 1 + j]
    return keys


def _order(keys: np.ndarray, counts: np.ndarray, base: int) -> _Order:
    contexts, first, types = np.unique(keys // base, return_index=True, return_counts=True)
    totals = np.add.reduceat(counts, first) if len(counts) else counts
    return _Order(keys, counts.astype(np.float64), contexts, totals.astype(np.float64), types.astype(np.float64))


class NgramModel:
    """P(next character | previous order-1 characters), fitted on ids from a vocabulary of size V."""

    def __init__(self, orders: list[_Order], vocab_size: int, discount: float):
        self.orders = orders  # orders[k - 1] holds the k-grams
        self.vocab_size = vocab_size
        self.discount = discount

    @property
    def order(self) -> int:
        return len(self.orders)

    @classmethod
    def fit(cls, ids: np.ndarray | list[int], order: int, vocab_size: int, discount: float = DISCOUNT) -> NgramModel:
        if not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= MAX_ORDER:
            raise CharRNNError(f"the n-gram order must be in 1..{MAX_ORDER}, got {order!r}")
        if order * math.log2(max(vocab_size, 2)) >= 62:
            raise CharRNNError(f"an order-{order} n-gram over {vocab_size} characters is too large to index; "
                               "use a lower order")
        if not 0 < discount < 1:
            raise CharRNNError(f"the discount must be in (0, 1), got {discount}")
        arr = np.asarray(ids, dtype=np.int64)
        if len(arr) < order:
            raise CharRNNError(f"an order-{order} n-gram needs at least {order} characters of training text, "
                               f"got {len(arr)}")
        orders: list[_Order] = []
        keys, counts = np.unique(_grams(arr, order, vocab_size), return_counts=True)
        orders.append(_order(keys, counts, vocab_size))
        for k in range(order - 1, 0, -1):  # continuation counts: distinct characters before each k-gram
            keys, counts = np.unique(orders[-1].keys % vocab_size**k, return_counts=True)
            orders.append(_order(keys, counts, vocab_size))
        return cls(orders[::-1], vocab_size, discount)

    def probabilities(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """P(ids[t] | ids[max(0, t-order+1) .. t-1]) for t = 1 .. n-1, as an (n-1,) float64 array."""
        arr = np.asarray(ids, dtype=np.int64)
        n, base, d = len(arr), self.vocab_size, self.discount
        if n < 2:
            return np.zeros(0)
        if arr.min() < 0 or arr.max() >= base:
            raise CharRNNError(f"character ids must be in 0..{base - 1}")
        unigram = self.orders[0]
        p = np.full(n, 1.0 / base)
        found, at = _lookup(unigram.keys, arr)
        c1 = np.where(found, unigram.counts[np.minimum(at, len(unigram.counts) - 1)], 0.0)
        total1, types1 = unigram.totals.sum(), float(len(unigram.keys))
        p = np.maximum(c1 - d, 0.0) / total1 + d * types1 / total1 * p
        for k in range(2, self.order + 1):
            level = self.orders[k - 1]
            keys = np.full(n, -1, dtype=np.int64)
            keys[k - 1 :] = _grams(arr, k, base)
            valid = keys >= 0
            hit, at = _lookup(level.keys, keys)
            count = np.where(hit & valid, level.counts[np.minimum(at, len(level.counts) - 1)], 0.0)
            chit, cat = _lookup(level.contexts, np.where(valid, keys // base, -1))
            chit &= valid
            cat = np.minimum(cat, len(level.contexts) - 1)
            total = np.where(chit, level.totals[cat], 0.0)
            types = np.where(chit, level.types[cat], 0.0)
            safe = np.where(chit, total, 1.0)
            p = np.where(chit, np.maximum(count - d, 0.0) / safe + d * types / safe * p, p)
        return p[1:]

    def surprisal(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """-ln P for every character after the first, in nats."""
        return -np.log(self.probabilities(ids))


def _lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(sorted_keys) == 0:
        return np.zeros(len(queries), dtype=bool), np.zeros(len(queries), dtype=np.int64)
    at = np.searchsorted(sorted_keys, queries)
    clipped = np.minimum(at, len(sorted_keys) - 1)
    return sorted_keys[clipped] == queries, clipped
