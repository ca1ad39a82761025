"""Stateful generation: warm the hidden state on the prime, then one character at a time.

Each generated id is fed back through the hidden state; the context is never re-read, so the
work per character is constant however long the text grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .errors import CharRNNError
from .model import CharRNN, Hidden
from .runtime import onednn_disabled
from .vocab import Vocab

MAX_LENGTH = 100_000_000


def check_options(length: int, temperature: float, greedy: bool) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise CharRNNError(f"length must be a non-negative integer, got {length!r}")
    if length > MAX_LENGTH:
        raise CharRNNError(f"length {length} is absurdly large (limit {MAX_LENGTH})")
    if not greedy and not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise CharRNNError(f"temperature must be > 0 (use 0 or --greedy for argmax), got {temperature!r}")


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


def choose(logits: torch.Tensor, temperature: float, greedy: bool, generator: torch.Generator) -> int:
    if greedy:
        return int(torch.argmax(logits))
    probs = F.softmax(logits.double() / temperature, dim=-1)  # softmax subtracts the max: finite at tiny T
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def generate(model: CharRNN, vocab: Vocab, length: int, *, prime: str = "", temperature: float = 1.0,
             greedy: bool = False, seed: int = 0, unknown: str = "error",
             on_text: Callable[[str], None] | None = None) -> str:
    """Generate `length` characters after `prime` (not included in the result).

    `greedy` (or temperature 0) takes the most likely character each step. The same seed gives the
    same text. `on_text` receives each character as it is produced, for streaming.
    """
    if temperature == 0:
        greedy = True
    check_options(length, temperature, greedy)
    model.eval()
    device = model.head.weight.device
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    logits, hidden = warm(model, prime_ids(vocab, prime, unknown))
    out: list[str] = []
    step_input = torch.empty((1, 1), dtype=torch.long, device=device)
    with onednn_disabled():
        for i in range(length):
            next_id = choose(logits.float().cpu(), temperature, greedy, generator)
            char = vocab.chars[next_id]
            out.append(char)
            if on_text is not None:
                on_text(char)
            if i + 1 < length:
                step_input.fill_(next_id)
                step_logits, hidden = model(step_input, hidden)
                logits = step_logits[0, -1]
    return "".join(out)
