"""Text metrics for the temperature sweep: pure functions over strings (stdlib and NumPy only).

Each function measures one thing a reader notices in generated text: repetition, loops, invented
words, text copied from the training corpus. Nothing here knows about models or files. The
training text is indexed once (`CorpusIndex`: its word set and a suffix array) so that every
sample is checked against it by binary search instead of by rescanning the corpus.
"""

from __future__ import annotations

import math
import re
import zlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# A word is a run of letters, with apostrophes allowed inside ("don't", "o'er"); digits and
# underscores split words. Case is folded so "The" at a sentence start is the known word "the".
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")

REPEAT_N = 8  # n-gram size for repetition: longer than most English words, so "the " does not count
COPY_N = 10  # n-gram size for copying: long enough that a match is a copied phrase, not a common word


def words(text: str) -> list[str]:
    """The lower-cased words of `text` (letter runs, apostrophes allowed inside)."""
    return [w.lower() for w in _WORD.findall(text)]


def ngrams(text: str, n: int) -> list[str]:
    """Every overlapping character n-gram of `text`, in order."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [text[i:i + n] for i in range(len(text) - n + 1)]


def distinct_ngram_ratio(text: str, n: int = REPEAT_N) -> float:
    """Distinct-n: distinct character n-grams / all n-grams (1.0 = nothing repeats; 1.0 for text shorter than n)."""
    grams = ngrams(text, n)
    return len(set(grams)) / len(grams) if grams else 1.0


def repeated_ngram_share(text: str, n: int = REPEAT_N) -> float:
    """Share of character n-grams that repeat an n-gram seen earlier in the same text (1 - distinct-n)."""
    return 1.0 - distinct_ngram_ratio(text, n)


def compression_ratio(text: str) -> float:
    """UTF-8 size / zlib-compressed size (level 9): higher means more repetitive; 0.0 for empty text."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw, 9)) if raw else 0.0


@dataclass(frozen=True)
class Loop:
    """The exact cycle a text ends in: `period` characters repeated from `start` to the end."""

    period: int
    start: int  # index where the periodic tail begins
    span: int  # characters from `start` to the end (at least `min_repeats` periods)


def _z_function(s: str) -> list[int]:
    """z[i] = length of the longest common prefix of s and s[i:] (z[0] = len(s))."""
    n = len(s)
    z = [0] * n
    if n:
        z[0] = n
    left = right = 0
    for i in range(1, n):
        if i < right:
            z[i] = min(right - i, z[i - left])
        while i + z[i] < n and s[z[i]] == s[i + z[i]]:
            z[i] += 1
        if i + z[i] > right:
            left, right = i, i + z[i]
    return z


def trailing_loop(text: str, min_repeats: int = 2, min_span: int = 32) -> Loop | None:
    """The exact cycle the text ends in (the periodic tail reaching furthest back, at least `min_repeats` periods and `min_span` chars), or None."""
    if min_repeats < 2 or min_span < 1:
        raise ValueError("a loop needs min_repeats >= 2 and min_span >= 1")
    # On the reversed text, z[p] counts how far back text[i] == text[i - p] holds from the end,
    # so the periodic tail with period p is z[p] + p characters long.
    # The loop is the periodic tail that reaches furthest back; multiples of its period reach
    # exactly as far, so ties go to the shortest period. A short accidental square at the very end
    # ("...the the ") reaches less far and loses.
    z = _z_function(text[::-1])
    n = len(text)
    best: Loop | None = None
    for period in range(1, n // min_repeats + 1):
        span = z[period] + period
        if span >= min_repeats * period and span >= min_span and (best is None or span > best.span):
            best = Loop(period=period, start=n - span, span=span)
    return best


def loop_period(text: str, min_repeats: int = 2, min_span: int = 32) -> int:
    """Period of the exact cycle the text ends in (see `trailing_loop`), 0 when it ends in none."""
    loop = trailing_loop(text, min_repeats, min_span)
    return loop.period if loop else 0


def complete_words(text: str) -> list[str]:
    """The lower-cased words of `text`, without a last word the text's end cuts off (text ending inside a word)."""
    found = words(text)
    if found and _WORD.match(text[-1]):
        found.pop()
    return found


def invented_word_share(text: str, known_words: Iterable[str] | frozenset[str]) -> float:
    """Share of the complete words of `text` not found among `known_words` (lower-cased); 0.0 when it has none."""
    known = known_words if isinstance(known_words, (set, frozenset)) else frozenset(known_words)
    found = complete_words(text)
    return sum(w not in known for w in found) / len(found) if found else 0.0


def suffix_array(text: str, max_prefix: int | None = None) -> np.ndarray:
    """Start positions of the suffixes of `text` in code-point order (prefix doubling with NumPy).

    With `max_prefix`, suffixes are only ordered by their first `max_prefix` characters or more,
    which is all a search for strings up to that length needs.
    """
    n = len(text)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    rank = np.unique(codes, return_inverse=True)[1].astype(np.int64).reshape(-1) + 1  # 1..; 0 = past the end
    order = np.argsort(rank, kind="stable")
    width = 1
    while rank.max() < n and (max_prefix is None or width < max_prefix):
        following = np.zeros(n, dtype=np.int64)
        following[:n - width] = rank[width:]
        key = rank * (n + 1) + following  # < (n + 1)^2, fits int64 for any text that fits memory
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.concatenate(([1], 1 + np.cumsum(sorted_key[1:] != sorted_key[:-1])))
        width *= 2
    return order


class CorpusIndex:
    """The training text indexed once: its word set and a suffix array for substring look-ups."""

    def __init__(self, text: str, max_match: int = 4096):
        self.text = text
        self.words = frozenset(words(text))
        self.max_match = max_match
        self._suffixes = memoryview(suffix_array(text, max_prefix=max_match))  # indexing gives ints

    def __len__(self) -> int:
        return len(self.text)

    def contains(self, fragment: str) -> bool:
        """Whether `fragment` (at most `max_match` chars) occurs in the training text."""
        if not fragment:
            return True
        size = len(fragment)
        if size > self.max_match:
            raise ValueError(f"fragments are looked up up to {self.max_match} characters, got {size}")
        text = self.text
        pos = bisect_left(self._suffixes, fragment, key=lambda start: text[start:start + size])
        return pos < len(self._suffixes) and text.startswith(fragment, self._suffixes[pos])


def match_lengths(text: str, index: CorpusIndex) -> list[int]:
    """For each position i, the length of the longest prefix of text[i:] found in the training text."""
    lengths: list[int] = []
    length = 0
    for i in range(len(text)):
        # If text[i-1 : i-1+m] occurs in the corpus then so does text[i : i-1+m]: start from m - 1.
        length = max(length - 1, 0)
        while i + length < len(text) and length < index.max_match and index.contains(text[i:i + length + 1]):
            length += 1
        lengths.append(length)
    return lengths


def copied_ngram_share(text: str, index: CorpusIndex, n: int = COPY_N, lengths: Sequence[int] | None = None) -> float:
    """Share of the character n-grams of `text` that occur verbatim in the training text (0.0 if shorter than n)."""
    lengths = match_lengths(text, index) if lengths is None else lengths
    total = len(text) - n + 1
    return sum(1 for i in range(total) if lengths[i] >= n) / total if total > 0 else 0.0


def longest_copy(text: str, index: CorpusIndex, lengths: Sequence[int] | None = None) -> str:
    """The longest substring of `text` that occurs verbatim in the training text."""
    lengths = match_lengths(text, index) if lengths is None else lengths
    if not lengths:
        return ""
    start = max(range(len(lengths)), key=lengths.__getitem__)
    return text[start:start + lengths[start]]


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of their positions (as Spearman's rho needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman rank correlation of two equal-length sequences (NaN when either is constant or too short)."""
    if len(xs) != len(ys):
        raise ValueError(f"sequences differ in length ({len(xs)} and {len(ys)})")
    if len(xs) < 2:
        return math.nan
    rx, ry = np.array(ranks(xs)), np.array(ranks(ys))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else math.nan
