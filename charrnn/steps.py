"""Looking inside each step of a generation, and presenting results as strings and records
(printing is the caller's business)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .decoding import Decoding
from .errors import CharRNNError
from .generation import Generation, Sample
from .model import CharRNN
from .vocab import Vocab


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
# presenting results

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
