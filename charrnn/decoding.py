"""The decoding chain: how each next character is chosen from the model's logits.

**logits -> repetition penalty -> temperature -> top-k -> top-p -> choice** (argmax, ε-greedy or a
draw). `Chooser.choose` is the one function that decides every generated character, whatever asks
(`generate`, `stream`, batched samples, `inspect_steps`, the sweep); beam search takes its
log-probabilities from `log_softmax` here. It works in float32 on preallocated buffers: an option
that is off is a branch skipped, never a second implementation, so the same logits, options and
uniforms give the same character at any batch size and whether or not the distribution is shown.

Draws come from NumPy's counter-based Philox generator keyed by (seed, stream): a sample's draws
depend only on its own seed and position, never on the batch it is in or on what other options
consumed.

Adding a decoding option (min-p, typical sampling, ...): a field on `Decoding` (its check in
`__post_init__`, its `metadata` saying which CLI option sets it and whether only a draw uses it),
its step in `Chooser.choose`, and its click option in the CLI's `_decoding_options` list. The
request rules (`charrnn.request`) and the strategy label read the fields, so nothing else changes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CharRNNError

GREEDY_BELOW = 1e-100  # temperatures below this are greedy (see Decoding.is_greedy)
MAX_REPETITION_WINDOW = 100_000


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _option(default: Any, cli: str, draw: bool = False, needs: str | None = None) -> Any:
    """A Decoding field: `cli` names its command-line option; `draw` marks options that only shape
    a random draw (greedy decoding would ignore them); `needs` names the field without which it does
    nothing."""
    return field(default=default, metadata={"cli": cli, "draw": draw, "needs": needs})


@dataclass(frozen=True)
class Decoding:
    """How each next character is chosen. Defaults are plain sampling at temperature 1."""

    temperature: float = _option(1.0, "--temperature", draw=True)  # 0 means greedy
    greedy: bool = _option(False, "--greedy")
    top_k: int | None = _option(None, "--top-k", draw=True)
    top_p: float | None = _option(None, "--top-p", draw=True)
    epsilon: float = _option(0.0, "--epsilon", draw=True)  # with this probability take the argmax, else sample
    repetition_penalty: float = _option(1.0, "--repetition-penalty")  # >1 divides recent characters' probability
    repetition_window: int = _option(20, "--repetition-window", needs="repetition_penalty")

    def __post_init__(self) -> None:
        t = self.temperature
        if not _number(t) or not math.isfinite(t) or t < 0:
            raise CharRNNError(f"temperature must be > 0 (use 0 or --greedy for argmax), got {t!r}")
        if not isinstance(self.greedy, bool):
            raise CharRNNError(f"greedy must be true or false, got {self.greedy!r}")
        if self.top_k is not None and (not _integer(self.top_k) or self.top_k < 1):
            raise CharRNNError(f"top-k must be an integer >= 1, got {self.top_k!r}")
        if self.top_p is not None and not (_number(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise CharRNNError(f"top-p must be in (0, 1], got {self.top_p!r}")
        if not (_number(self.epsilon) and 0.0 <= self.epsilon <= 1.0):
            raise CharRNNError(f"epsilon must be in [0, 1], got {self.epsilon!r}")
        if not (_number(self.repetition_penalty) and math.isfinite(self.repetition_penalty)
                and self.repetition_penalty >= 1.0):
            raise CharRNNError(f"repetition penalty must be >= 1, got {self.repetition_penalty!r}")
        if not _integer(self.repetition_window) or not 1 <= self.repetition_window <= MAX_REPETITION_WINDOW:
            raise CharRNNError(f"repetition window must be in 1..{MAX_REPETITION_WINDOW}, got {self.repetition_window!r}")

    @classmethod
    def options(cls) -> list[dataclasses.Field]:
        """The fields, each with its `metadata` (cli, draw, needs): what request checks iterate over."""
        return list(dataclasses.fields(cls))

    @property
    def is_greedy(self) -> bool:
        # Below GREEDY_BELOW, logit / temperature can overflow to inf and the softmax to NaN; such a
        # temperature picks the argmax anyway (barring exact ties), so it is decoded greedily.
        return self.greedy or self.temperature < GREEDY_BELOW

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0

    @property
    def strategy(self) -> str:
        rep = f" rep={self.repetition_penalty:g}/{self.repetition_window}" if self.penalised else ""
        if self.is_greedy:
            return "greedy" + rep
        parts = [f"T={self.temperature:g}"]
        if self.top_k is not None:
            parts.append(f"top-k={self.top_k}")
        if self.top_p is not None:
            parts.append(f"top-p={self.top_p:g}")
        if self.epsilon:
            parts.append(f"eps={self.epsilon:g}")
        return " ".join(parts) + rep


# ----------------------------------------------------------------------------------------------
# random numbers


class Draws:
    """Uniforms in [0, 1) for each sample and step, `BLOCK` steps at a time.

    Each sample has its own Philox stream keyed by (seed, stream): `stream` 0 gives the draws, 1
    the ε-greedy coin. Philox is counter-based, so step t of seed s is the same number whatever
    the batch; the generators are kept, so a block costs one call per sample.
    """

    BLOCK = 256

    def __init__(self, seeds: np.ndarray, stream: int):
        self.generators = [np.random.Generator(np.random.Philox(key=int(s) | (stream << 64))) for s in seeds]
        self.start = -self.BLOCK

    def at(self, step: int) -> np.ndarray:
        """The uniforms of `step` (steps are asked for in order), one per sample."""
        if step >= self.start + self.BLOCK:
            if step != self.start + self.BLOCK:
                raise ValueError("Draws are read one step after another")
            self.start = step
            self.block = np.empty((self.BLOCK, len(self.generators)))  # rows handed out earlier stay valid
            for j, g in enumerate(self.generators):
                self.block[:, j] = g.random(self.BLOCK)
        return self.block[step - self.start]


# ----------------------------------------------------------------------------------------------
# the chain


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """The model's log-probabilities (N, V) at T=1, in float64 (what beam search ranks by)."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


class Chooser:
    """The decoding chain for rows of float32 logits, with its buffers.

    `choose` is the only code that decides a generated character. Every step is written once, on
    (rows, vocabulary) arrays, and skipped when its option is off, so a plain temperature draw is
    the same function as a filtered one with the filters' branches not taken.
    """

    MAX_INV_T = 1e30  # below T = 1e-30 every gap is infinite in float32 anyway; keeps 0 * 1/T finite

    def __init__(self, decoding: Decoding, vocab_size: int):
        self.decoding = d = decoding
        self.vocab_size = v = vocab_size
        self.greedy = d.is_greedy
        self.inv_t = np.float32(1.0 if self.greedy else min(1.0 / d.temperature, self.MAX_INV_T))
        self.log_penalty = np.float32(math.log(d.repetition_penalty)) if d.penalised else None
        self.top_k = d.top_k if d.top_k is not None and d.top_k < v and not self.greedy else None
        self.top_p = d.top_p if d.top_p is not None and d.top_p < 1.0 and not self.greedy else None
        self.epsilon = d.epsilon if d.epsilon > 0 and not self.greedy else 0.0
        # The sampling distribution differs from softmax((logits - max) / T) only through these:
        # then the statistics need the weights of the step, not just its logits.
        self.filtered = self.top_k is not None or self.top_p is not None or self.log_penalty is not None
        self.rows = -1
        self.weights = np.empty((0, v), np.float32)  # exp(z) of the last step, zero where filtered out

    def _buffers(self, n: int) -> None:
        self.rows = n
        self.z = np.empty((n, self.vocab_size), np.float32)
        self.e = np.empty((n, self.vocab_size), np.float32) if self.filtered else self.z
        self.cdf = np.empty((n, self.vocab_size), np.float32)

    def penalised(self, logits: np.ndarray, recent: np.ndarray | None) -> np.ndarray:
        """Logits with log(penalty) taken off each recently generated character (dividing its
        probability by the penalty)."""
        if self.log_penalty is None or recent is None:
            return logits
        return logits - self.log_penalty * (recent > 0)

    def choose(self, logits: np.ndarray, u: np.ndarray, u_eps: np.ndarray | None = None,
               recent: np.ndarray | None = None) -> np.ndarray:
        """logits (N, V) float32, uniforms u (N,) (and u_eps (N,) for ε-greedy), recent-character
        counts (N, V) for the penalty -> chosen ids (N,). After a draw `self.weights` holds the step's
        weights (zero where filtered out) and, when filters or a penalty apply, `self.z` their logs."""
        x = self.penalised(logits, recent)
        if self.greedy:
            return np.argmax(x, axis=1)
        n, v = x.shape
        if n != self.rows:
            self._buffers(n)
        if n == 1 and self.top_k is None and self.top_p is None:
            ids = self._draw_one(x[0], u[0])
        else:
            ids = self._draw(x, u)
        if self.epsilon:
            assert u_eps is not None, "ε-greedy needs its own uniforms"
            ids = np.where(u_eps < self.epsilon, np.argmax(x, axis=1), ids)
        return ids

    def _draw(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Temperature, top-k, top-p and the inverse-CDF draw for rows of penalised logits."""
        n, v = x.shape
        z, cdf = self.z, self.cdf
        np.subtract(x, np.maximum.reduce(x, axis=1, keepdims=True), out=z)  # <= 0: finite for any T
        z *= self.inv_t
        if self.top_k is not None:
            kth = np.partition(z, v - self.top_k, axis=1)[:, v - self.top_k, None]
            z[z < kth] = -np.inf
        e = self.weights = np.exp(z, out=self.e)  # self.e is z itself unless the statistics need z
        if self.top_p is not None:
            order = np.argsort(-e, axis=1, kind="stable")
            ranked = np.take_along_axis(e, order, axis=1)
            ranked_cdf = np.add.accumulate(ranked, axis=1)
            # The smallest prefix whose mass reaches top_p of the total.
            keep_ranked = ranked_cdf - ranked < np.float32(self.top_p) * ranked_cdf[:, -1:]
            keep = np.empty_like(keep_ranked)
            np.put_along_axis(keep, order, keep_ranked, axis=1)
            # The most likely character, the one greedy and ε-greedy take, even where top_p * total
            # rounds to 0 or exp() rounds its weight to a tie with another's (ranked first instead).
            keep[np.arange(n), np.argmax(x, axis=1)] = True
            e[~keep] = 0.0
            z[~keep] = -np.inf
        np.add.accumulate(e, axis=1, out=cdf)
        # Inverse CDF: the number of bins whose cumulative mass is <= u * total (never a zero bin).
        ids = np.add.reduce(cdf <= (u * cdf[:, -1])[:, None], axis=1, dtype=np.intp)
        if ids.max() >= v:  # u * total rounded up to the total: the last character that can occur
            last = v - 1 - np.argmax(e[:, ::-1] > 0, axis=1)
            ids = np.where(ids >= v, last, ids)
        return ids

    def _draw_one(self, x: np.ndarray, u: float) -> np.ndarray:
        """`_draw` for one row without top-k or top-p: the same operations in the same float32, on
        1-D views with ufunc methods (at batch 1 their call overhead is the cost, a third of the
        2-D calls'); searchsorted(cdf, t, "right") is the count of cdf <= t, cdf being monotone.
        The property tests hold it to `_draw` draw for draw."""
        z, e, cdf = self.z[0], self.e[0], self.cdf[0]
        np.subtract(x, np.maximum.reduce(x), out=z)
        z *= self.inv_t
        np.exp(z, out=e)
        self.weights = self.e
        np.add.accumulate(e, out=cdf)
        i = int(cdf.searchsorted(u * cdf[-1], "right"))
        if i >= self.vocab_size:
            i = self.vocab_size - 1 - int(np.argmax(e[::-1] > 0))
        return np.array([i], dtype=np.intp)

    def distribution(self, logits: np.ndarray, recent: np.ndarray | None = None) -> np.ndarray:
        """The probabilities (N, V) the chain draws from, as float64 (one-hot for greedy)."""
        x = np.asarray(logits, dtype=np.float32)
        if self.greedy:
            probs = np.zeros(x.shape)
            probs[np.arange(len(x)), np.argmax(self.penalised(x, recent), axis=1)] = 1.0
            return probs
        self.choose(x, np.zeros(len(x)), np.ones(len(x)), recent)
        weights = self.weights.astype(np.float64)
        return weights / weights.sum(axis=1, keepdims=True)


def sampling_distribution(logits: np.ndarray, decoding: Decoding, recent: np.ndarray | None = None) -> np.ndarray:
    """logits (N, V) -> the probabilities (N, V) the chain draws from (float64, from the float32 chain)."""
    x = np.array(logits, dtype=np.float32, ndmin=2)
    return Chooser(decoding, x.shape[1]).distribution(x, recent)


# ----------------------------------------------------------------------------------------------
# statistics


class Statistics:
    """Per-sample sums of log p(chosen) under the sampling distribution, -log p(chosen) under the
    model at T=1, the sampling distribution's entropy, and the count of steps.

    They are not decisions, so they are computed a block of steps at a time (float32 per step,
    float64 sums) from a copy of the steps' logits (and, when filters or a penalty shape the
    distribution, of its log-weights): at batch 1 that is one pass per block instead of a dozen
    NumPy calls per step.
    """

    MAX_BLOCK_BYTES = 1 << 20

    def __init__(self, chooser: Chooser, num_samples: int):
        self.chooser = chooser
        self.logprob = np.zeros(num_samples)
        self.nll = np.zeros(num_samples)
        self.entropy = np.zeros(num_samples)
        self.counts = np.zeros(num_samples, dtype=np.int64)
        self.rows: np.ndarray | None = None
        self.k = 0

    def _resize(self, rows: np.ndarray) -> None:
        n, v = len(rows), self.chooser.vocab_size
        self.rows = rows
        self.block = max(1, min(64, self.MAX_BLOCK_BYTES // (4 * n * v)))
        self.logits = np.empty((self.block, n, v), np.float32)
        self.z = np.empty((self.block, n, v), np.float32) if self.chooser.filtered else None
        self.ids = np.empty((self.block, n), np.intp)
        self.k = 0

    def add(self, logits: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> None:
        """Record a step in which the rows `rows` (sample indices; a new array when rows end) chose
        `ids` from `logits`, right after `Chooser.choose` made that choice."""
        if rows is not self.rows:
            self.flush()
            self._resize(rows)
        self.logits[self.k] = logits
        if self.z is not None and not self.chooser.greedy:
            self.z[self.k] = self.chooser.z
        self.ids[self.k] = ids
        self.k += 1
        if self.k == self.block:
            self.flush()

    def flush(self) -> None:
        """Add the buffered steps to the sums (also when a generation is stopped early)."""
        k, rows, chooser = self.k, self.rows, self.chooser
        if not k or rows is None:
            return
        self.k = 0
        x = self.logits[:k]  # (k, n, V)
        ids = self.ids[:k, :, None]
        s = x - x.max(axis=2, keepdims=True)
        e = np.exp(s)
        total = e.sum(axis=2, dtype=np.float64)
        log_total = np.log(total)
        self.nll[rows] -= (np.take_along_axis(s, ids, axis=2)[..., 0] - log_total).sum(axis=0)
        self.counts[rows] += k
        if chooser.greedy:
            return  # the choice was certain: log p = 0 and entropy 0
        if self.z is not None or chooser.inv_t != 1.0:  # at T = 1, unfiltered, it is the model's
            if self.z is not None:
                s = self.z[:k]
            else:
                s *= chooser.inv_t
            e = np.exp(s)
            total = e.sum(axis=2, dtype=np.float64)
            log_total = np.log(total)
            if self.z is not None:
                s = np.where(e > 0, s, np.float32(0.0))  # filtered out: weight 0, and no 0 * -inf
        self.logprob[rows] += (np.take_along_axis(s, ids, axis=2)[..., 0] - log_total).sum(axis=0)
        self.entropy[rows] += (log_total - np.einsum("kbv,kbv->kb", e, s, dtype=np.float64) / total).sum(axis=0)
