"""Stateful generation: warm the hidden state on the prime, then one character at a time.

Each generated id is fed back through the hidden state; the context is never re-read, so the
work per character is constant however long the text grows. The step runs on an engine from
`charrnn.engine`; each character is chosen by `decoding.Chooser.choose`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .decoding import Chooser, Decoding, Draws, Statistics
from .engine import NumpyEngine, StepEngine, make_engine
from .errors import CharRNNError
from .model import CharRNN, Hidden
from .request import check_kept, check_length, check_num_samples, check_seed, check_stops
from .threads import apply as apply_threads
from .vocab import Vocab

# Logits held per model call while warming: the prime goes through the model's forward in chunks
# of at most PRIME_CHUNK characters, fewer for large vocabularies (a book-length prime costs no
# more memory than a paragraph).
PRIME_CHUNK = 8192
PRIME_LOGITS = 1 << 22
# Primes up to this many characters are warmed by NumPy steps when the generation steps on NumPy.
# A generation stays in one runtime: idle threads of the other (torch's OpenMP, OpenBLAS's) spin
# on the cores this one needs. In a loop of 400-character generations at 2x256 a torch warm-up
# took ~55 ms more than alone (100-char prime: 62 ms against NumPy's 7 ms; 1,600 chars: 137 against
# 108). Torch's forward wins only in a fresh process, past ~32 characters (256: ~10 ms against 17),
# so longer primes (prime files, books) still take it (BENCHMARKS.md, "Beside busy processes",
# session 8).
NUMPY_WARM_MAX = 256


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
def warm(model: CharRNN, ids: list[int], hidden: Hidden | None = None,
         on_numpy: bool = False) -> tuple[torch.Tensor, Hidden]:
    """Run the prime through the model; returns the logits after its last character (V,) and the
    state. `on_numpy`: the steps that follow run on a `NumpyEngine`, so a short prime does too."""
    if on_numpy and len(ids) <= NUMPY_WARM_MAX and NumpyEngine.computes(model):
        apply_threads()
        engine = NumpyEngine(model, 1)
        if hidden is not None:
            engine.set_hidden(hidden)
        step_logits = None
        for i in ids:
            step_logits = engine.step(np.array([i], dtype=np.intp))
        assert step_logits is not None, "warm needs at least one id"
        return torch.from_numpy(step_logits[0].copy()), engine.get_hidden()
    device = model.head.weight.device
    chunk_len = max(1, min(PRIME_CHUNK, PRIME_LOGITS // model.config.vocab_size))
    logits = None
    for start in range(0, len(ids), chunk_len):
        chunk = torch.tensor([ids[start : start + chunk_len]], dtype=torch.long, device=device)
        logits, hidden = model(chunk, hidden)
    assert logits is not None and hidden is not None, "warm needs at least one id"
    return logits[0, -1], hidden


class Generation:
    """A batched generation in progress. Iterating yields each step's characters, one per sample
    ("" for a sample that already ended on a stop string).

    Sample i uses seed `seed + i`, so it is the same text a generation of `seed + i` alone gives.
    With `keep_text=False` nothing grows with the length (streaming a million characters to a
    file runs in constant memory); `samples` then carries the statistics with empty texts. With
    `want_probs`, `probs` holds each step's sampling distribution (for greedy decoding, the model's
    own at T=1 after the penalty: what a reader wants to see).
    """

    def __init__(self, model: CharRNN, vocab: Vocab, length: int, *, num_samples: int = 1, prime: str = "",
                 decoding: Decoding | None = None, seed: int = 0, stop: Sequence[str] = (),
                 unknown: str = "error", keep_text: bool = True, want_probs: bool = False,
                 backend: str = "auto"):
        self.decoding = decoding = decoding or Decoding()
        if not isinstance(decoding, Decoding):
            raise CharRNNError(f"decoding must be a Decoding, got {type(decoding).__name__}")
        check_length(length)
        check_num_samples(num_samples)
        if keep_text:
            check_kept(num_samples, length, "samples")
        check_seed(seed)
        self.model, self.vocab, self.length = model, vocab, length
        self.num_samples = n = num_samples
        self.stops = check_stops(stop, vocab)
        self.keep_text, self.want_probs = keep_text, want_probs
        self.prime_ids = prime_ids(vocab, prime, unknown)
        self.seeds = np.array([(seed + i) & 0xFFFFFFFFFFFFFFFF for i in range(n)], dtype=np.uint64)
        self.backend = backend
        self.texts: list[list[str]] = [[] for _ in range(n)]
        self.chooser = Chooser(decoding, len(vocab))
        self.statistics = Statistics(self.chooser, n)
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
        if self.length == 0:
            return
        engine: StepEngine = make_engine(model, n, self.backend)
        logits_t, hidden = warm(model, self.prime_ids, on_numpy=isinstance(engine, NumpyEngine))
        engine.set_hidden(hidden)
        logits = np.broadcast_to(logits_t.detach().to("cpu", torch.float32).numpy(), (n, len(self.vocab)))
        chooser, statistics = self.chooser, self.statistics
        draws = Draws(self.seeds, 0) if not chooser.greedy else None
        coin = Draws(self.seeds, 1) if chooser.epsilon else None
        shown = None
        if self.want_probs:  # greedy shows the model's distribution (after the penalty), not a one-hot
            shown = Chooser(Decoding(repetition_penalty=decoding.repetition_penalty,
                                     repetition_window=decoding.repetition_window), len(self.vocab)) \
                if chooser.greedy else chooser
        window = decoding.repetition_window
        recent = np.zeros((n, len(self.vocab)), dtype=np.int32) if decoding.penalised else None
        history = np.zeros((window, n), dtype=np.intp) if decoding.penalised else None
        chars_of = self.vocab.chars
        stops = self.stops
        tail = max((len(s) for s in stops), default=0)
        stop_ends = {s[-1] for s in stops}
        tails: list[str] = [""] * n  # the last `tail` characters of each sample (stop matching)
        keep = self.keep_text
        texts = self.texts
        rows = self.rows
        no_uniforms = np.zeros(n)
        try:
            for step in range(self.length):
                u = draws.at(step) if draws is not None else no_uniforms
                u_eps = coin.at(step) if coin is not None else None
                if len(rows) < n:
                    u = u[rows]
                    u_eps = u_eps[rows] if u_eps is not None else None
                ids = chooser.choose(logits, u, u_eps, recent)
                statistics.add(logits, ids, rows)
                if shown is not None:
                    self.probs = shown.distribution(logits, recent) if shown is not chooser else \
                        chooser.weights / chooser.weights.sum(axis=1, keepdims=True, dtype=np.float64)
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
                    rows = rows[alive]  # a new array: the statistics start a block for the new rows
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
            statistics.flush()

    @property
    def samples(self) -> list[Sample]:
        d = self.decoding
        t = self.statistics
        out = []
        for i in range(self.num_samples):
            c = max(int(t.counts[i]), 1)
            out.append(Sample(text="".join(self.texts[i]), seed=int(self.seeds[i]), strategy=d.strategy,
                              temperature=0.0 if d.is_greedy else float(d.temperature),
                              logprob=float(t.logprob[i]), nll=float(t.nll[i]) / c,
                              entropy=float(t.entropy[i]) / c, stopped=bool(self.stopped[i]),
                              num_chars=int(t.counts[i])))
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
             repetition_window: int = 20, stop: Sequence[str] = (), on_text: Callable[[str], None] | None = None,
             include_prime: bool = False) -> str:
    """Generate up to `length` characters after `prime`.

    The result is the continuation only; with `include_prime=True` it starts with the prime, as
    `charrnn sample` prints it. `greedy` (or temperature 0) takes the most likely character each
    step. The same seed gives the same text. `on_text` receives each generated character as it is
    produced, for streaming.
    """
    if not isinstance(include_prime, bool):
        raise CharRNNError(f"include_prime must be true or false, got {include_prime!r}")
    decoding = Decoding(temperature=temperature, greedy=greedy, top_k=top_k, top_p=top_p, epsilon=epsilon,
                        repetition_penalty=repetition_penalty, repetition_window=repetition_window)
    callback = None if on_text is None else (lambda step, chars: on_text(chars[0]))
    text = generate_batch(model, vocab, length, num_samples=1, prime=prime, decoding=decoding, seed=seed,
                          stop=stop, unknown=unknown, on_step=callback)[0].text
    return prime + text if include_prime else text
