"""Stateful generation: warm the hidden state on the prime, then one character at a time.

Each generated id is fed back through the hidden state; the context is never re-read, so the
work per character is constant however long the text grows.

The decoding chain for every step is: logits -> repetition penalty -> temperature -> top-k ->
top-p -> choice (argmax, ε-greedy or a draw). Draws use a counter-based generator (one stream per
sample, keyed by its seed), so sample i of a batch is exactly the text that `seed + i` gives alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CharRNNError
from .model import CharRNN, Hidden
from .runtime import onednn_disabled
from .vocab import Vocab

MAX_LENGTH = 100_000_000
MAX_SAMPLES = 100_000


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
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise CharRNNError(f"top-k must be an integer >= 1, got {self.top_k!r}")
        if self.top_p is not None and not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise CharRNNError(f"top-p must be in (0, 1], got {self.top_p!r}")
        if not (isinstance(self.epsilon, (int, float)) and 0.0 <= self.epsilon <= 1.0):
            raise CharRNNError(f"epsilon must be in [0, 1], got {self.epsilon!r}")
        if not (isinstance(self.repetition_penalty, (int, float)) and math.isfinite(self.repetition_penalty)
                and self.repetition_penalty >= 1.0):
            raise CharRNNError(f"repetition penalty must be >= 1, got {self.repetition_penalty!r}")
        if not isinstance(self.repetition_window, int) or self.repetition_window < 1:
            raise CharRNNError(f"repetition window must be >= 1, got {self.repetition_window!r}")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0

    @property
    def strategy(self) -> str:
        if self.is_greedy:
            return "greedy"
        parts = [f"T={self.temperature:g}"]
        if self.top_k is not None:
            parts.append(f"top-k={self.top_k}")
        if self.top_p is not None:
            parts.append(f"top-p={self.top_p:g}")
        if self.epsilon:
            parts.append(f"eps={self.epsilon:g}")
        if self.repetition_penalty != 1.0:
            parts.append(f"rep={self.repetition_penalty:g}")
        return " ".join(parts)


@dataclass
class Sample:
    """One generated text and what the model thought while writing it."""

    text: str
    seed: int
    strategy: str
    temperature: float
    logprob: float = 0.0  # sum of log p(chosen) under the (filtered) sampling distribution
    nll: float = 0.0  # mean -log p(chosen) per character under the model at T=1 (nats)
    entropy: float = 0.0  # mean entropy per character of the sampling distribution (nats)
    stopped: bool = False  # ended on a stop string
    num_chars: int = field(default=0)


def check_length(length: int) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise CharRNNError(f"length must be a non-negative integer, got {length!r}")
    if length > MAX_LENGTH:
        raise CharRNNError(f"length {length} is absurdly large (limit {MAX_LENGTH})")


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
    """Run the prime through the model in one call; returns the last logits (V,) and the state."""
    device = model.head.weight.device
    with onednn_disabled():
        logits, hidden = model(torch.tensor([ids], dtype=torch.long, device=device), hidden)
    return logits[0, -1], hidden


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def uniforms(seeds: np.ndarray, step: int, salt: int = 0) -> np.ndarray:
    """Counter-based uniforms in [0, 1): one per seed for this step (splitmix64 of seed and step).

    Stateless, so a sample's draws depend only on its own seed and position, never on the batch.
    """
    with np.errstate(over="ignore"):
        z = seeds.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64((step * 2 + salt) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def sampling_distribution(logits: torch.Tensor, decoding: Decoding, recent: torch.Tensor | None = None) -> torch.Tensor:
    """logits (N, V) -> probabilities (N, V) float64 after penalty, temperature, top-k and top-p."""
    logits = logits.double()
    if recent is not None and decoding.repetition_penalty != 1.0:
        # Dividing a probability by the penalty = subtracting log(penalty) from its logit.
        logits = logits - math.log(decoding.repetition_penalty) * (recent > 0)
    if decoding.is_greedy:
        probs = torch.zeros_like(logits)
        probs.scatter_(1, logits.argmax(dim=1, keepdim=True), 1.0)
        return probs
    logits = logits / decoding.temperature
    if decoding.top_k is not None and decoding.top_k < logits.shape[1]:
        kth = torch.topk(logits, decoding.top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = F.softmax(logits, dim=1)  # subtracts the max: finite even at T=1e-4
    if decoding.top_p is not None and decoding.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=1, descending=True)
        before = torch.cumsum(sorted_probs, dim=1) - sorted_probs
        keep_sorted = before < decoding.top_p  # the smallest prefix whose mass reaches top_p
        keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
        probs = probs * keep
        probs = probs / probs.sum(dim=1, keepdim=True)
    return probs


def choose(probs: torch.Tensor, logits: torch.Tensor, decoding: Decoding, seeds: np.ndarray, step: int) -> torch.Tensor:
    """One id per row: argmax, ε-greedy or an inverse-CDF draw from `probs` with counter uniforms."""
    if decoding.is_greedy:
        return probs.argmax(dim=1)
    u = torch.from_numpy(uniforms(seeds, step))
    cdf = torch.cumsum(probs, dim=1)
    cdf[:, -1] = cdf[:, -1].clamp(min=1.0)  # rounding must never leave u above the last bin
    drawn = torch.searchsorted(cdf, u.unsqueeze(1) * cdf[:, -1:].clamp(max=1.0)).squeeze(1)
    drawn = drawn.clamp(max=probs.shape[1] - 1)
    if decoding.epsilon > 0:
        exploit = torch.from_numpy(uniforms(seeds, step, salt=1) < decoding.epsilon)
        drawn = torch.where(exploit, probs.argmax(dim=1), drawn)
    return drawn


def _expand(hidden: Hidden, n: int) -> Hidden:
    if isinstance(hidden, tuple):
        return tuple(h.expand(-1, n, -1).contiguous() for h in hidden)  # type: ignore[return-value]
    return hidden.expand(-1, n, -1).contiguous()


@torch.inference_mode()
def generate_batch(model: CharRNN, vocab: Vocab, length: int, *, num_samples: int = 1, prime: str = "",
                   decoding: Decoding | None = None, seed: int = 0, stop: Sequence[str] = (),
                   unknown: str = "error", on_step: Callable[[int, list[str]], None] | None = None) -> list[Sample]:
    """Generate `num_samples` texts of up to `length` characters after `prime`, in one batched pass.

    Sample i uses seed `seed + i`; it is the same text `generate_batch(..., num_samples=1,
    seed=seed + i)` returns. A sample ends right after the first occurrence of any `stop` string.
    `on_step(step, chars)` receives the characters of the step (one per sample) as they are made.
    """
    decoding = decoding or Decoding()
    check_length(length)
    if not isinstance(num_samples, int) or not 1 <= num_samples <= MAX_SAMPLES:
        raise CharRNNError(f"number of samples must be in 1..{MAX_SAMPLES}, got {num_samples!r}")
    stop = [s for s in stop if s]
    model.eval()
    device = model.head.weight.device
    n, vocab_size = num_samples, len(vocab)
    seeds = np.array([(seed + i) & 0xFFFFFFFFFFFFFFFF for i in range(n)], dtype=np.uint64)
    logits, hidden = warm(model, prime_ids(vocab, prime, unknown))
    logits = logits.float().cpu().expand(n, -1)
    hidden = _expand(hidden, n)
    texts: list[list[str]] = [[] for _ in range(n)]
    active = np.ones(n, dtype=bool)
    stopped = np.zeros(n, dtype=bool)
    logprob = np.zeros(n)
    nll = np.zeros(n)
    entropy = np.zeros(n)
    counts = np.zeros(n, dtype=np.int64)
    recent = torch.zeros((n, vocab_size), dtype=torch.float64) if decoding.repetition_penalty != 1.0 else None
    history: list[torch.Tensor] = []
    tail = max((len(s) for s in stop), default=0)
    step_input = torch.empty((n, 1), dtype=torch.long, device=device)
    with onednn_disabled():
        for step in range(length):
            probs = sampling_distribution(logits, decoding, recent)
            ids = choose(probs, logits, decoding, seeds, step)
            log_p = torch.log(probs.gather(1, ids.unsqueeze(1)).squeeze(1).clamp_min(1e-300))
            model_logp = F.log_softmax(logits.double(), dim=1).gather(1, ids.unsqueeze(1)).squeeze(1)
            ent = -(probs * torch.log(probs.clamp_min(1e-300))).sum(dim=1)
            ids_list = ids.tolist()
            chars = [vocab.chars[i] for i in ids_list]
            for row in np.flatnonzero(active):
                texts[row].append(chars[row])
                logprob[row] += float(log_p[row])
                nll[row] -= float(model_logp[row])
                entropy[row] += float(ent[row])
                counts[row] += 1
                if tail and _ends_with_stop(texts[row], stop, tail):
                    active[row] = False
                    stopped[row] = True
            if on_step is not None:
                on_step(step, chars)
            if not active.any() or step + 1 == length:
                break
            if recent is not None:
                history.append(ids)
                recent.scatter_add_(1, ids.unsqueeze(1), torch.ones((n, 1), dtype=torch.float64))
                if len(history) > decoding.repetition_window:
                    old = history.pop(0)
                    recent.scatter_add_(1, old.unsqueeze(1), -torch.ones((n, 1), dtype=torch.float64))
            step_input.copy_(ids.view(n, 1))
            step_logits, hidden = model(step_input, hidden)
            logits = step_logits[:, -1].float().cpu()
    samples = []
    for i in range(n):
        c = max(int(counts[i]), 1)
        samples.append(Sample(text="".join(texts[i]), seed=int(seeds[i]), strategy=decoding.strategy,
                              temperature=0.0 if decoding.is_greedy else float(decoding.temperature),
                              logprob=float(logprob[i]), nll=float(nll[i]) / c, entropy=float(entropy[i]) / c,
                              stopped=bool(stopped[i]), num_chars=int(counts[i])))
    return samples


def _ends_with_stop(chars: list[str], stop: Sequence[str], tail: int) -> bool:
    end = "".join(chars[-tail:])
    return any(end.endswith(s) for s in stop)


def generate(model: CharRNN, vocab: Vocab, length: int, *, prime: str = "", temperature: float = 1.0,
             greedy: bool = False, seed: int = 0, unknown: str = "error", top_k: int | None = None,
             top_p: float | None = None, epsilon: float = 0.0, repetition_penalty: float = 1.0,
             stop: Sequence[str] = (), on_text: Callable[[str], None] | None = None) -> str:
    """Generate up to `length` characters after `prime` (not included in the result).

    `greedy` (or temperature 0) takes the most likely character each step. The same seed gives the
    same text. `on_text` receives each character as it is produced, for streaming.
    """
    decoding = Decoding(temperature=temperature, greedy=greedy, top_k=top_k, top_p=top_p, epsilon=epsilon,
                        repetition_penalty=repetition_penalty)
    callback = None if on_text is None else (lambda step, chars: on_text(chars[0]))
    return generate_batch(model, vocab, length, num_samples=1, prime=prime, decoding=decoding, seed=seed,
                          stop=stop, unknown=unknown, on_step=callback)[0].text
