"""Beam search: the most likely continuations under the model, length-normalised.

It draws nothing: every step ranks each live hypothesis extended by every character by the
model's own log-probabilities (`decoding.log_softmax`, T=1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .decoding import log_softmax
from .engine import NumpyEngine, make_engine
from .errors import CharRNNError
from .generation import Sample, prime_ids, warm
from .model import CharRNN
from .request import check_beam, check_beam_width, check_length, check_length_penalty, check_stops
from .vocab import Vocab


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
    check_beam_width(width)
    if not isinstance(num_return, int) or isinstance(num_return, bool) or not 1 <= num_return <= width:
        raise CharRNNError(f"number of beams returned must be in 1..{width} (the beam width), got {num_return!r}")
    check_beam(width, length)
    check_length_penalty(length_penalty)
    stops = check_stops(stop, vocab)
    model.eval()
    ids = prime_ids(vocab, prime, unknown)
    strategy = f"beam {width}"
    if length == 0:
        return [Sample(text="", seed=None, strategy=strategy, temperature=1.0)]
    engine = make_engine(model, 1, backend)
    logits_t, hidden = warm(model, ids, on_numpy=isinstance(engine, NumpyEngine))
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
        logp = log_softmax(logits)
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
