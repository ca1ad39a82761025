"""Stateful generation: warm the hidden state on the prime, then one character at a time.

Each generated id is fed back through the hidden state; the context is never re-read, so the
work per character is constant however long the text grows. The step itself runs on an engine
from `charrnn.engine` (float32 NumPy on CPU, the torch model elsewhere).

The decoding chain for every step is: logits -> repetition penalty -> temperature -> top-k ->
top-p -> choice (argmax, ε-greedy or a draw). Draws use a counter-based generator (one stream per
sample, keyed by its seed), so sample i of a batch is exactly the text that `seed + i` gives alone.

Entry points, from the most to the least convenient:
  generate(...)        -> str                one sample
  generate_batch(...)  -> list[Sample]       N samples in one batched pass, with their statistics
  stream(...)          -> Iterator[str]      one sample, character by character, in constant memory
  Generation(...)                            the iterator underneath all three (per-step access)
  beam_search(...)     -> list[Sample]       the most likely continuations, length-normalised
  inspect_steps(...)   -> Iterator[StepView] the top candidates at each generated position
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .engine import StepEngine, make_engine
from .errors import CharRNNError
from .model import CharRNN, Hidden
from .runtime import onednn_disabled
from .vocab import Vocab

MAX_LENGTH = 100_000_000
MAX_SAMPLES = 100_000
MAX_BEAM = 1_000
# Characters held in memory at once over a batch of samples: as much as one sample of the longest
# length (a streamed sample keeps nothing at all).
MAX_KEPT = MAX_LENGTH
# Beam search keeps back-pointers for every step (two small arrays each, whatever the width).
MAX_BEAM_LENGTH = 1_000_000
GREEDY_BELOW = 1e-100  # temperatures below this are greedy (see Decoding.is_greedy)
PRIME_CHUNK = 8192  # prime characters per model call while warming (bounds memory for huge primes)


@dataclass(frozen=True)
class Decoding:
    """How each next character is chosen. Defaults are plain sampling at temperature 1."""

    temperature: float = 1.0  # 0 means greedy
    greedy: bool = False
    top_k: int | None = None
    top_p: float | None = None
    epsilon: float = 0.0  # with this probability take the argmax, otherwise sample
    repetition_penalty: float = 1.0  # >1 divides the probability of recently generated characters
    repetition_window: int = 20

    def __post_init__(self) -> None:
        t = self.temperature
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
            raise CharRNNError(f"temperature must be > 0 (use 0 or --greedy for argmax), got {t!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1):
            raise CharRNNError(f"top-k must be an integer >= 1, got {self.top_k!r}")
        if self.top_p is not None and not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise CharRNNError(f"top-p must be in (0, 1], got {self.top_p!r}")
        if not (isinstance(self.epsilon, (int, float)) and 0.0 <= self.epsilon <= 1.0):
            raise CharRNNError(f"epsilon must be in [0, 1], got {self.epsilon!r}")
        if not (isinstance(self.repetition_penalty, (int, float)) and math.isfinite(self.repetition_penalty)
                and self.repetition_penalty >= 1.0):
            raise CharRNNError(f"repetition penalty must be >= 1, got {self.repetition_penalty!r}")
        if (not isinstance(self.repetition_window, int) or isinstance(self.repetition_window, bool)
                or not 1 <= self.repetition_window <= 100_000):
            raise CharRNNError(f"repetition window must be in 1..100000, got {self.repetition_window!r}")

    @property
    def is_greedy(self) -> bool:
        # Below GREEDY_BELOW, logit / temperature can overflow to inf and the softmax to NaN; such a
        # temperature picks the argmax anyway (barring exact ties), so it is decoded greedily.
        return self.greedy or self.temperature < GREEDY_BELOW

    @property
    def strategy(self) -> str:
        rep = f" rep={self.repetition_penalty:g}/{self.repetition_window}" if self.repetition_penalty != 1.0 else ""
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


@dataclass
class Sample:
    """One generated text and what the model thought while writing it."""

    text: str
    seed: int | None  # None for beam search, which draws nothing
    strategy: str
    temperature: float
    logprob: float = 0.0  # sum of log p(chosen) under the (filtered) sampling distribution
    nll: float = 0.0  # mean -log p(chosen) per character under the model at T=1 (nats)
    entropy: float = 0.0  # mean entropy per character of the sampling distribution (nats)
    stopped: bool = False  # ended on a stop string
    num_chars: int = field(default=0)

    @property
    def logprob_per_char(self) -> float:
        """The length-normalised log-probability (beam search ranks by this)."""
        return self.logprob / max(self.num_chars, 1)


# ----------------------------------------------------------------------------------------------
# checks and set-up


def check_length(length: int) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise CharRNNError(f"length must be a non-negative integer, got {length!r}")
    if length > MAX_LENGTH:
        raise CharRNNError(f"length {length} is absurdly large (limit {MAX_LENGTH:,})")


def check_num_samples(num_samples: int) -> None:
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or not 1 <= num_samples <= MAX_SAMPLES:
        raise CharRNNError(f"number of samples must be in 1..{MAX_SAMPLES:,}, got {num_samples!r}")


def check_kept(count: int, length: int, what: str) -> None:
    """Refuse `count` texts of `length` kept in memory together when that is absurdly large."""
    if count * length > MAX_KEPT:
        raise CharRNNError(f"{count:,} {what} of {length:,} characters are absurdly many to keep in memory "
                           f"(at most {MAX_KEPT:,} characters in all); ask for fewer or shorter ones")


def check_beam(width: int, length: int) -> None:
    if length > MAX_BEAM_LENGTH:
        raise CharRNNError(f"beam search over {length:,} characters is absurdly long (at most {MAX_BEAM_LENGTH:,})")
    check_kept(width, length, "beam hypotheses")


def check_stops(stop: Sequence[str], vocab: Vocab) -> list[str]:
    """Non-empty stop strings; one with a character the model cannot produce is a mistake."""
    if isinstance(stop, str):
        stop = [stop]
    stops = [s for s in stop if s]
    for s in stops:
        missing = vocab.unknown(s)
        if missing:
            raise CharRNNError(f"stop string {s!r} can never occur: the model has no {', '.join(map(repr, missing))}")
    return stops


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v"}


def unescape(text: str) -> str:
    r"""Interpret backslash escapes as in a Python string ("\n\n" -> two newlines, \t, \xHH, \uHHHH).

    Unlike `codecs.decode(..., "unicode_escape")` it leaves non-ASCII characters alone.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(text):
            raise CharRNNError(f"{text!r} ends with a lone backslash (write \\\\ for a backslash)")
        code = text[i + 1]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
            continue
        digits = {"x": 2, "u": 4, "U": 8}.get(code)
        if digits is None:
            raise CharRNNError(f"unknown escape \\{code} in {text!r} (known: \\n \\t \\r \\\\ \\xHH \\uHHHH)")
        hexa = text[i + 2 : i + 2 + digits]
        try:
            if len(hexa) != digits:
                raise ValueError
            value = int(hexa, 16)
        except ValueError:
            raise CharRNNError(f"bad escape \\{code}{hexa} in {text!r}: needs {digits} hex digits") from None
        if value > 0x10FFFF:
            raise CharRNNError(f"bad escape \\{code}{hexa} in {text!r}: beyond the last Unicode code point (10FFFF)")
        out.append(chr(value))
        i += 2 + digits
    return "".join(out)


def prime_ids(vocab: Vocab, prime: str, unknown: str = "error") -> list[int]:
    """Ids to warm the state with. An empty prime starts from a newline, the usual start of text."""
    try:
        ids = vocab.encode(prime, unknown=unknown)
    except CharRNNError as exc:
        raise CharRNNError(f"prime {exc}; use --unknown skip to drop them") from None
    if not ids:
        ids = [vocab.index["\n"]] if "\n" in vocab else [0]
    return ids


@torch.inference_mode()
def warm(model: CharRNN, ids: list[int], hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
    """Run the prime through the model; returns the logits after its last character (V,) and the state.

    The prime goes through in chunks (one model call each) and only the last position meets the
    head, so a book-length prime costs no more memory than a paragraph.
    """
    device = model.head.weight.device
    out = None
    with onednn_disabled():
        for start in range(0, len(ids), PRIME_CHUNK):
            chunk = torch.tensor([ids[start : start + PRIME_CHUNK]], dtype=torch.long, device=device)
            out, hidden = model.rnn(model.embed(chunk), hidden)
    assert out is not None and hidden is not None, "warm needs at least one id"
    return model.head(out[0, -1]), hidden


# ----------------------------------------------------------------------------------------------
# random numbers

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniform_block(seeds: np.ndarray, start: int, count: int, salt: int = 0) -> np.ndarray:
    """Counter-based uniforms in [0, 1) for steps start..start+count-1: shape (count, len(seeds)).

    splitmix64 of (seed, step, salt): stateless, so a sample's draws depend only on its own seed and
    position, never on the batch it is in or on how many draws other options consumed.
    """
    steps = np.arange(start, start + count, dtype=np.uint64)[:, None]
    with np.errstate(over="ignore"):
        z = seeds.astype(np.uint64)[None, :] * _GOLDEN + (steps * np.uint64(2) + np.uint64(salt)) * _MIX1
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def uniforms(seeds: np.ndarray, step: int, salt: int = 0) -> np.ndarray:
    """The uniforms of one step, one per seed (a row of `uniform_block`)."""
    return uniform_block(seeds, step, 1, salt)[0]


class _Uniforms:
    """Uniforms computed a block of steps at a time: one vectorised hash per block, not per step."""

    BLOCK = 256

    def __init__(self, seeds: np.ndarray, salt: int):
        self.seeds, self.salt = seeds, salt
        self.start, self.block = 0, uniform_block(seeds, 0, self.BLOCK, salt)

    def at(self, step: int) -> np.ndarray:
        if not self.start <= step < self.start + self.BLOCK:
            self.start = step - step % self.BLOCK
            self.block = uniform_block(self.seeds, self.start, self.BLOCK, self.salt)
        return self.block[step - self.start]


# ----------------------------------------------------------------------------------------------
# the decoding chain


def _as_numpy(logits: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(logits, torch.Tensor):
        return logits.detach().to("cpu", torch.float64).numpy()
    return np.asarray(logits)


def filtered_logits(logits: np.ndarray | torch.Tensor, decoding: Decoding, recent: np.ndarray | None = None) -> np.ndarray:
    """logits (N, V) -> float64 logits after penalty, temperature and top-k (removed ones are -inf)."""
    x = np.array(_as_numpy(logits), dtype=np.float64, ndmin=2)  # a copy: the caller's array is untouched
    if recent is not None and decoding.repetition_penalty != 1.0:
        # Dividing a probability by the penalty = subtracting log(penalty) from its logit.
        x -= math.log(decoding.repetition_penalty) * (recent > 0)
    if decoding.is_greedy:
        return x
    x -= x.max(axis=1, keepdims=True)  # <= 0: dividing by a tiny temperature gives -inf, never inf - inf
    x /= decoding.temperature
    vocab_size = x.shape[1]
    if decoding.top_k is not None and decoding.top_k < vocab_size:
        kth = np.partition(x, vocab_size - decoding.top_k, axis=1)[:, vocab_size - decoding.top_k, None]
        x[x < kth] = -np.inf
    return x


def sampling_distribution(logits: np.ndarray | torch.Tensor, decoding: Decoding,
                          recent: np.ndarray | None = None) -> np.ndarray:
    """logits (N, V) -> probabilities (N, V) float64 after penalty, temperature, top-k and top-p.

    Greedy gives a one-hot row. The softmax subtracts the row maximum first, so it is finite
    however small the temperature.
    """
    x = filtered_logits(logits, decoding, recent)
    if decoding.is_greedy:
        probs = np.zeros_like(x)
        probs[np.arange(len(x)), x.argmax(axis=1)] = 1.0
        return probs
    x -= x.max(axis=1, keepdims=True)
    probs = np.exp(x)
    probs /= probs.sum(axis=1, keepdims=True)
    if decoding.top_p is not None and decoding.top_p < 1.0:
        order = np.argsort(-probs, axis=1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=1)
        before = np.cumsum(sorted_probs, axis=1) - sorted_probs
        keep_sorted = before < decoding.top_p  # the smallest prefix whose mass reaches top_p
        keep = np.empty_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        probs *= keep
        probs /= probs.sum(axis=1, keepdims=True)
    return probs


def _draw(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw per row: the first bin whose cumulative mass exceeds u * total.

    Counting the bins with cdf <= target never lands on a zero-probability bin.
    """
    cdf = np.cumsum(probs, axis=1)
    target = u * cdf[:, -1]
    ids = np.count_nonzero(cdf <= target[:, None], axis=1)
    over = ids >= probs.shape[1]
    if over.any():  # u * total rounded up to the total: take the last possible character
        last = probs.shape[1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)
        ids = np.where(over, last, ids)
    return ids


def _log_softmax_at(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
    return x[np.arange(len(x)), ids] - lse


def _entropy(probs: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
    return -terms.sum(axis=1)


@dataclass
class StepResult:
    """What one decoding step chose, per row: ids and the log-probabilities behind them."""

    ids: np.ndarray  # (N,) chosen character ids
    logp: np.ndarray  # (N,) log p(chosen) under the sampling distribution
    model_logp: np.ndarray  # (N,) log p(chosen) under the model at T=1
    entropy: np.ndarray  # (N,) entropy of the sampling distribution
    probs: np.ndarray | None = None  # (N, V) the sampling distribution, when asked for


def decode_step(logits: np.ndarray, decoding: Decoding, u: np.ndarray, u_eps: np.ndarray | None = None,
                recent: np.ndarray | None = None, want_probs: bool = False) -> StepResult:
    """One step of the full chain for a batch of logits (N, V).

    With `want_probs`, greedy decoding reports the model's distribution at T=1 (after the
    repetition penalty) rather than the one-hot it chooses from: that is what a reader wants to see.
    """
    probs = sampling_distribution(logits, decoding, recent)
    rows = np.arange(len(probs))
    if decoding.is_greedy:
        ids = probs.argmax(axis=1)
    else:
        ids = _draw(probs, u)
        if decoding.epsilon > 0:
            assert u_eps is not None
            ids = np.where(u_eps < decoding.epsilon, probs.argmax(axis=1), ids)
    chosen = probs[rows, ids]
    with np.errstate(divide="ignore"):
        logp = np.log(chosen)
    result = StepResult(ids=ids, logp=logp, model_logp=_log_softmax_at(logits, ids), entropy=_entropy(probs))
    if want_probs:
        shown = decoding
        if decoding.is_greedy:
            shown = Decoding(temperature=1.0, repetition_penalty=decoding.repetition_penalty,
                             repetition_window=decoding.repetition_window)
        result.probs = probs if shown is decoding else sampling_distribution(logits, shown, recent)
    return result


# ----------------------------------------------------------------------------------------------
# generation


class _FastChooser:
    """Plain temperature sampling or greedy for the hot loop: the choice now, the statistics later.

    At batch 1 the model step costs tens of microseconds and every NumPy call about one, so the
    draw is a handful of float32 calls, and the log-probabilities and entropies are computed for a
    block of steps at once (from a copy of their logits) instead of a dozen calls per step.
    """

    MAX_BLOCK_BYTES = 1 << 20
    MAX_INV_T = 1e30  # below T = 1e-30 every gap is infinite in float32 anyway; keeps 0 * 1/T finite

    def __init__(self, decoding: Decoding, vocab_size: int, totals: dict[str, np.ndarray]):
        self.greedy = decoding.is_greedy
        self.inv_t = 1.0 if self.greedy else min(1.0 / decoding.temperature, self.MAX_INV_T)
        self.vocab_size = vocab_size
        self.totals = totals
        self.rows: np.ndarray | None = None
        self.k = 0

    def _resize(self, rows: np.ndarray) -> None:
        n, v = len(rows), self.vocab_size
        self.rows = rows
        self.block = max(1, min(64, self.MAX_BLOCK_BYTES // (4 * n * v)))
        self.logits = np.empty((self.block, n, v), np.float32)
        self.ids = np.empty((self.block, n), np.intp)
        self.z = np.empty((n, v), np.float32)
        self.cdf = np.empty((n, v), np.float32)
        self.z1, self.cdf1 = self.z[0], self.cdf[0]
        self.k = 0

    def choose(self, logits: np.ndarray, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if self.rows is None or len(rows) != len(self.rows):
            self.flush()
            self._resize(rows)
        if self.greedy:
            ids = logits.argmax(axis=1)
        elif len(rows) == 1:  # the same arithmetic on 1-D views, with ufunc methods (a third of
            # the cost of the np.max / np.cumsum wrappers at this size)
            z, cdf = self.z1, self.cdf1
            row = logits[0]
            np.subtract(row, np.maximum.reduce(row), out=z)  # <= 0: finite however small the temperature
            z *= self.inv_t
            np.exp(z, out=z)
            np.add.accumulate(z, out=cdf)
            ids = np.array([min(int(cdf.searchsorted(u[0] * cdf[-1], "right")), self.vocab_size - 1)])
        else:
            z, cdf = self.z, self.cdf
            np.subtract(logits, np.maximum.reduce(logits, axis=1, keepdims=True), out=z)
            z *= self.inv_t
            np.exp(z, out=z)
            np.add.accumulate(z, axis=1, out=cdf)
            ids = np.add.reduce(cdf <= (u * cdf[:, -1])[:, None], axis=1, dtype=np.intp)
            np.minimum(ids, self.vocab_size - 1, out=ids)  # only if u * total rounded up to total
        self.logits[self.k] = logits
        self.ids[self.k] = ids
        self.k += 1
        if self.k == self.block:
            self.flush()
        return ids

    def flush(self) -> None:
        """Add the statistics of the buffered steps to the per-sample totals (float32 per step,
        float64 sums)."""
        k, rows = self.k, self.rows
        if not k or rows is None:
            return
        self.k = 0
        x = self.logits[:k]  # (k, n, V)
        ids = self.ids[:k, :, None]
        s = x - x.max(axis=2, keepdims=True)
        e = np.exp(s)
        total = e.sum(axis=2, dtype=np.float64)
        log_total = np.log(total)
        model_logp = np.take_along_axis(s, ids, axis=2)[..., 0] - log_total
        t = self.totals
        t["nll"][rows] -= model_logp.sum(axis=0, dtype=np.float64)
        t["counts"][rows] += k
        if self.greedy:
            return  # the choice was certain: log p = 0 and entropy 0
        if self.inv_t != 1.0:  # at T = 1 the sampling distribution is the model's
            s *= self.inv_t
            np.exp(s, out=e)
            total = e.sum(axis=2, dtype=np.float64)
            log_total = np.log(total)
        t["logprob"][rows] += (np.take_along_axis(s, ids, axis=2)[..., 0] - log_total).sum(axis=0)
        t["entropy"][rows] += (log_total - np.einsum("kbv,kbv->kb", e, s, dtype=np.float64) / total).sum(axis=0)


class Generation:
    """A batched generation in progress. Iterating yields each step's characters, one per sample
    ("" for a sample that already ended on a stop string).

    Sample i uses seed `seed + i`, so it is the same text a generation of `seed + i` alone gives.
    With `keep_text=False` nothing grows with the length (streaming a million characters to a
    file runs in constant memory); `samples` then carries the statistics with empty texts.
    """

    def __init__(self, model: CharRNN, vocab: Vocab, length: int, *, num_samples: int = 1, prime: str = "",
                 decoding: Decoding | None = None, seed: int = 0, stop: Sequence[str] = (),
                 unknown: str = "error", keep_text: bool = True, want_probs: bool = False,
                 backend: str = "auto"):
        self.decoding = decoding = decoding or Decoding()
        check_length(length)
        check_num_samples(num_samples)
        if keep_text:
            check_kept(num_samples, length, "samples")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise CharRNNError(f"seed must be an integer, got {seed!r}")
        self.model, self.vocab, self.length = model, vocab, length
        self.num_samples = n = num_samples
        self.stops = check_stops(stop, vocab)
        self.keep_text, self.want_probs = keep_text, want_probs
        self.prime_ids = prime_ids(vocab, prime, unknown)
        self.seeds = np.array([(seed + i) & 0xFFFFFFFFFFFFFFFF for i in range(n)], dtype=np.uint64)
        self.backend = backend
        self.texts: list[list[str]] = [[] for _ in range(n)]
        self.totals = {"logprob": np.zeros(n), "nll": np.zeros(n), "entropy": np.zeros(n),
                       "counts": np.zeros(n, dtype=np.int64)}
        self.stopped = np.zeros(n, dtype=bool)
        self.probs: np.ndarray | None = None  # the last step's sampling distribution (want_probs)
        self.rows = np.arange(n)  # sample index of each engine row still generating
        self._done = False

    def __iter__(self) -> Iterator[list[str]]:
        if self._done:
            raise RuntimeError("a Generation can be iterated once")
        self._done = True
        model, decoding, n = self.model, self.decoding, self.num_samples
        model.eval()
        logits_t, hidden = warm(model, self.prime_ids)
        if self.length == 0:
            return
        engine: StepEngine = make_engine(model, n, self.backend)
        engine.set_hidden(hidden)
        logits = np.broadcast_to(logits_t.detach().to("cpu", torch.float32).numpy(), (n, len(self.vocab)))
        draws = _Uniforms(self.seeds, 0)
        exploit = _Uniforms(self.seeds, 1) if decoding.epsilon > 0 and not decoding.is_greedy else None
        penalise = decoding.repetition_penalty != 1.0
        fast = None
        unfiltered = (decoding.top_k is None or decoding.top_k >= len(self.vocab)) and \
            (decoding.top_p is None or decoding.top_p >= 1.0)
        if not self.want_probs and not penalise and (decoding.is_greedy or (unfiltered and decoding.epsilon == 0)):
            fast = _FastChooser(decoding, len(self.vocab), self.totals)
        window = decoding.repetition_window
        recent = np.zeros((n, len(self.vocab)), dtype=np.int32) if penalise else None
        history = np.zeros((window, n), dtype=np.intp) if penalise else None
        chars_of = self.vocab.chars
        stops = self.stops
        tail = max((len(s) for s in stops), default=0)
        stop_ends = {s[-1] for s in stops}
        tails: list[str] = [""] * n  # the last `tail` characters of each sample (stop matching)
        keep = self.keep_text
        texts = self.texts
        totals = self.totals
        rows = self.rows
        try:
            for step in range(self.length):
                u = draws.at(step)
                if len(rows) < n:
                    u = u[rows]
                if fast is not None:
                    ids = fast.choose(logits, u, rows)
                else:
                    u_eps = exploit.at(step)[rows] if exploit is not None else None
                    result = decode_step(logits, decoding, u, u_eps, recent, self.want_probs)
                    self.probs = result.probs
                    ids = result.ids
                    totals["logprob"][rows] += result.logp
                    totals["nll"][rows] -= result.model_logp
                    totals["entropy"][rows] += result.entropy
                    totals["counts"][rows] += 1
                if len(ids) == 1:
                    step_chars = [chars_of[ids[0]]]
                else:
                    step_chars = [chars_of[i] for i in ids.tolist()]
                if len(rows) == n:
                    out = step_chars
                else:
                    out = [""] * n
                    for r, c in zip(rows.tolist(), step_chars, strict=True):
                        out[r] = c
                if keep:
                    if n == 1:
                        texts[0].append(step_chars[0])
                    else:
                        for r, c in zip(rows.tolist(), step_chars, strict=True):
                            texts[r].append(c)
                finished = None
                if tail:
                    for j, (r, c) in enumerate(zip(rows.tolist(), step_chars, strict=True)):
                        t = (tails[r] + c)[-tail:]
                        tails[r] = t
                        if c in stop_ends and any(t.endswith(s) for s in stops):
                            self.stopped[r] = True
                            finished = [j] if finished is None else [*finished, j]
                yield out
                if step + 1 == self.length:
                    break
                if finished is not None:
                    alive = np.ones(len(rows), dtype=bool)
                    alive[finished] = False
                    if not alive.any():
                        break
                    if fast is not None:
                        fast.flush()  # its buffered statistics belong to the old rows
                    rows = rows[alive]
                    ids = ids[alive]
                    engine.select(np.flatnonzero(alive))
                    if recent is not None and history is not None:
                        recent = recent[alive]
                        history = history[:, alive]
                    self.rows = rows
                if recent is not None and history is not None:
                    slot = step % window
                    sel = np.arange(len(rows))
                    if step >= window:
                        recent[sel, history[slot]] -= 1  # one entry per row: no repeated index
                    recent[sel, ids] += 1
                    history[slot] = ids
                logits = engine.step(ids)
        finally:  # also when the consumer stops early: the statistics cover what was generated
            if fast is not None:
                fast.flush()

    @property
    def samples(self) -> list[Sample]:
        d = self.decoding
        out = []
        t = self.totals
        for i in range(self.num_samples):
            c = max(int(t["counts"][i]), 1)
            out.append(Sample(text="".join(self.texts[i]), seed=int(self.seeds[i]), strategy=d.strategy,
                              temperature=0.0 if d.is_greedy else float(d.temperature),
                              logprob=float(t["logprob"][i]), nll=float(t["nll"][i]) / c,
                              entropy=float(t["entropy"][i]) / c, stopped=bool(self.stopped[i]),
                              num_chars=int(t["counts"][i])))
        return out


def generate_batch(model: CharRNN, vocab: Vocab, length: int, *, num_samples: int = 1, prime: str = "",
                   decoding: Decoding | None = None, seed: int = 0, stop: Sequence[str] = (),
                   unknown: str = "error", on_step: Callable[[int, list[str]], None] | None = None,
                   backend: str = "auto") -> list[Sample]:
    """Generate `num_samples` texts of up to `length` characters after `prime`, in one batched pass.

    Sample i uses seed `seed + i`; it is the same text `generate_batch(..., num_samples=1,
    seed=seed + i)` returns. A sample ends right after the first occurrence of any `stop` string.
    `on_step(step, chars)` receives the characters of the step (one per sample, "" for samples
    that have ended) as they are made.
    """
    gen = Generation(model, vocab, length, num_samples=num_samples, prime=prime, decoding=decoding, seed=seed,
                     stop=stop, unknown=unknown, backend=backend)
    for step, chars in enumerate(gen):
        if on_step is not None:
            on_step(step, chars)
    return gen.samples


def stream(model: CharRNN, vocab: Vocab, length: int, *, prime: str = "", decoding: Decoding | None = None,
           seed: int = 0, stop: Sequence[str] = (), unknown: str = "error") -> Iterator[str]:
    """One sample, character by character, keeping nothing: constant memory for any length."""
    gen = Generation(model, vocab, length, prime=prime, decoding=decoding, seed=seed, stop=stop,
                     unknown=unknown, keep_text=False)
    for chars in gen:
        yield chars[0]


def generate(model: CharRNN, vocab: Vocab, length: int, *, prime: str = "", temperature: float = 1.0,
             greedy: bool = False, seed: int = 0, unknown: str = "error", top_k: int | None = None,
             top_p: float | None = None, epsilon: float = 0.0, repetition_penalty: float = 1.0,
             repetition_window: int = 20, stop: Sequence[str] = (), on_text: Callable[[str], None] | None = None) -> str:
    """Generate up to `length` characters after `prime` (not included in the result).

    `greedy` (or temperature 0) takes the most likely character each step. The same seed gives the
    same text. `on_text` receives each character as it is produced, for streaming.
    """
    decoding = Decoding(temperature=temperature, greedy=greedy, top_k=top_k, top_p=top_p, epsilon=epsilon,
                        repetition_penalty=repetition_penalty, repetition_window=repetition_window)
    callback = None if on_text is None else (lambda step, chars: on_text(chars[0]))
    return generate_batch(model, vocab, length, num_samples=1, prime=prime, decoding=decoding, seed=seed,
                          stop=stop, unknown=unknown, on_step=callback)[0].text


# ----------------------------------------------------------------------------------------------
# beam search


def beam_search(model: CharRNN, vocab: Vocab, length: int, *, width: int = 4, num_return: int = 1,
                prime: str = "", stop: Sequence[str] = (), unknown: str = "error", length_penalty: float = 1.0,
                backend: str = "auto") -> list[Sample]:
    """The `num_return` most likely continuations of `prime` found with a beam of `width`.

    Each step extends every live hypothesis by every character and keeps the `width` best by total
    log-probability under the model (T=1). A hypothesis that ends on a stop string is set aside as
    finished. The results are ranked by log-probability / length**length_penalty (1 = per-character
    mean, 0 = raw sum, which favours short texts). Width 1 is greedy decoding.
    """
    check_length(length)
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= MAX_BEAM:
        raise CharRNNError(f"beam width must be in 1..{MAX_BEAM}, got {width!r}")
    if not isinstance(num_return, int) or isinstance(num_return, bool) or not 1 <= num_return <= width:
        raise CharRNNError(f"number of beams returned must be in 1..{width} (the beam width), got {num_return!r}")
    check_beam(width, length)
    # length**penalty must stay finite for any length up to MAX_LENGTH; useful values are 0..2
    if not (isinstance(length_penalty, (int, float)) and math.isfinite(length_penalty) and 0 <= length_penalty <= 10):
        raise CharRNNError(f"length penalty must be in [0, 10], got {length_penalty!r}")
    stops = check_stops(stop, vocab)
    model.eval()
    logits_t, hidden = warm(model, prime_ids(vocab, prime, unknown))
    strategy = f"beam {width}"
    if length == 0:
        return [Sample(text="", seed=None, strategy=strategy, temperature=1.0)]
    engine = make_engine(model, 1, backend)
    engine.set_hidden(hidden)
    logits = logits_t.detach().to("cpu", torch.float32).numpy()[None, :]
    vocab_size = len(vocab)
    chars = vocab.chars
    tail = max((len(s) for s in stops), default=0)
    scores = np.zeros(1)  # total log-probability of each live hypothesis
    tails = [""]  # the last `tail` characters of each live hypothesis (stop matching)
    # Back-pointers instead of strings: step t holds, for each candidate kept, its character and
    # its parent's index among step t-1's candidates, so a step costs O(width), not O(width * length).
    parents_at: list[np.ndarray] = []
    ids_at: list[np.ndarray] = []
    row_index = np.zeros(1, dtype=np.intp)  # each live hypothesis' index among the previous step's candidates
    finished: list[tuple[int, int, float, bool]] = []  # (step, index at that step, total logprob, stopped)

    for step in range(length):
        x = logits.astype(np.float64)
        m = x.max(axis=1, keepdims=True)
        logp = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
        candidates = (scores[:, None] + logp).ravel()
        keep = min(width, len(candidates))
        # Best first; equal scores keep the lower (parent, character) index, as argmax would.
        best = np.argpartition(-candidates, keep - 1)[:keep] if keep < len(candidates) else np.arange(len(candidates))
        best = best[np.lexsort((best, -candidates[best]))]
        rows, ids = np.divmod(best, vocab_size)  # rows: live hypotheses (engine rows) extended
        parents_at.append(row_index[rows])
        ids_at.append(ids)
        new_scores = candidates[best]
        alive = np.ones(len(best), dtype=bool)
        if tail:
            new_tails = [(tails[r] + chars[i])[-tail:] for r, i in zip(rows.tolist(), ids.tolist(), strict=True)]
            for j, t in enumerate(new_tails):
                if any(t.endswith(s) for s in stops):
                    finished.append((step, j, float(new_scores[j]), True))
                    alive[j] = False
            tails = [t for t, a in zip(new_tails, alive, strict=True) if a]
        if step + 1 == length:
            finished.extend((step, j, float(new_scores[j]), False) for j in np.flatnonzero(alive).tolist())
            break
        if not alive.any():
            break
        row_index = np.flatnonzero(alive)
        scores = new_scores[row_index]
        engine.select(rows[row_index])
        logits = engine.step(ids[row_index])

    def text_of(step: int, index: int) -> str:
        out = []
        for t in range(step, -1, -1):
            out.append(chars[int(ids_at[t][index])])
            index = int(parents_at[t][index])
        return "".join(reversed(out))

    def normalised(total: float, n: int) -> float:
        return total / max(n, 1) ** length_penalty

    ranked = sorted(finished, key=lambda f: -normalised(f[2], f[0] + 1))[:num_return]
    results = []
    for step, index, total, stopped in ranked:
        text = text_of(step, index)
        results.append(Sample(text=text, seed=None, strategy=strategy, temperature=1.0, logprob=total,
                              nll=-total / max(len(text), 1), entropy=0.0, stopped=stopped, num_chars=len(text)))
    return results


# ----------------------------------------------------------------------------------------------
# looking inside each step


@dataclass
class StepView:
    """One generated position: the context before it, the choice, and the top candidates."""

    position: int  # 0-based index of the generated character
    context: str  # the text before this position (prime + generated so far), possibly cut to its end
    chosen: str
    chosen_prob: float  # its probability under the sampling distribution
    candidates: list[tuple[str, float]]  # the top characters and their probabilities, best first


def inspect_steps(model: CharRNN, vocab: Vocab, length: int, *, top: int = 5, prime: str = "",
                  decoding: Decoding | None = None, seed: int = 0, stop: Sequence[str] = (),
                  unknown: str = "error", context_chars: int | None = 40) -> Iterator[StepView]:
    """Generate like `generate` (same seed, same text) and describe every step.

    The probabilities are those of the sampling distribution (after temperature, filters and
    penalty) that the character was drawn from; for greedy decoding, the model's own (T=1). `context_chars` keeps only the end of the context
    (None keeps all of it, which grows with the text).
    """
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise CharRNNError(f"number of candidates shown must be >= 1, got {top!r}")
    if context_chars is not None and (not isinstance(context_chars, int) or context_chars < 0):
        raise CharRNNError(f"context width must be >= 0, got {context_chars!r}")
    gen = Generation(model, vocab, length, prime=prime, decoding=decoding, seed=seed, stop=stop, unknown=unknown,
                     keep_text=False, want_probs=True)
    context = prime
    top = min(top, len(vocab))
    chars = vocab.chars
    for position, step_chars in enumerate(gen):
        assert gen.probs is not None
        probs = gen.probs[0]
        order = np.argsort(-probs, kind="stable")[:top]
        chosen = step_chars[0]
        yield StepView(position=position, context=context, chosen=chosen,
                       chosen_prob=float(probs[vocab.index[chosen]]),
                       candidates=[(chars[i], float(probs[i])) for i in order.tolist()])
        context += chosen
        if context_chars is not None and len(context) > context_chars:
            context = context[len(context) - context_chars :]


# ----------------------------------------------------------------------------------------------
# presenting results (strings and records; printing is the caller's business)

_VISIBLE = {"\n": "↵", "\t": "→", "\r": "␍", " ": "␣"}


def visible(text: str, space: bool = False) -> str:
    """One visible glyph per character, so tables stay aligned: ↵ newline, → tab (␣ space if asked)."""
    out = []
    for c in text:
        if c == " " and not space:
            out.append(c)
        elif c in _VISIBLE:
            out.append(_VISIBLE[c])
        elif not c.isprintable():
            out.append("�")
        else:
            out.append(c)
    return "".join(out)


def step_table_header(top: int, context_width: int) -> str:
    cands = "  ".join(f"{f'#{k + 1}':<8}" for k in range(top))
    return f"{'pos':>6}  {'context':>{context_width}}  {'chose':<5} {'p':>6}  |  {cands}".rstrip()


def step_table_row(view: StepView, context_width: int) -> str:
    """One aligned line: position, the end of the context, the choice and the top candidates."""
    context = visible(view.context)[-context_width:] if context_width else ""
    cands = "  ".join(f"{visible(c, space=True)} {p:6.4f}" for c, p in view.candidates)
    return (f"{view.position:>6}  {context:>{context_width}}  {visible(view.chosen, space=True):<5} "
            f"{view.chosen_prob:6.4f}  |  {cands}")


def step_csv_header(top: int) -> list[str]:
    return ["position", "context", "chosen", "chosen_prob",
            *[name for k in range(1, top + 1) for name in (f"char_{k}", f"prob_{k}")]]


def step_csv_row(view: StepView) -> list[str | int | float]:
    """Raw characters (the CSV writer quotes newlines); probabilities in full precision."""
    row: list[str | int | float] = [view.position, view.context, view.chosen, f"{view.chosen_prob:.6g}"]
    for c, p in view.candidates:
        row += [c, f"{p:.6g}"]
    return row


def sample_record(sample: Sample) -> dict:
    """A Sample as a JSON-ready dict (the `--format jsonl` line)."""
    return {"text": sample.text, "seed": sample.seed, "temperature": sample.temperature,
            "strategy": sample.strategy, "logprob": sample.logprob, "logprob_per_char": sample.logprob_per_char,
            "nll": sample.nll, "entropy": sample.entropy, "stopped": sample.stopped, "num_chars": sample.num_chars}
