"""How surprised is a model by a text: mean loss in nats and bits per character, perplexity, and
the surprisal of every character.

Scoring reads the text the way the trainer's validation does: one stream, the hidden state carried
from the start, every character predicted from all the text before it. The first character has
nothing before it, so it is context only (unless a `context` string is given to start from).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CharRNNError
from .model import CharRNN, Hidden
from .threads import apply as apply_threads
from .vocab import Vocab

LN2 = math.log(2.0)


@dataclass
class TextScore:
    """The model's loss on a text."""

    num_chars: int  # characters scored
    total_nats: float  # sum of -log p(char | everything before it)
    surprisal: np.ndarray | None = None  # (num_chars,) nats per scored character, when asked for
    scored_text: str | None = None  # the characters `surprisal` belongs to, when asked for
    first_position: int = 1  # index in the text of the first scored character (0 when a context was given)

    @property
    def nats_per_char(self) -> float:
        return self.total_nats / self.num_chars

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / LN2

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_char)


def encode_scored(vocab: Vocab, text: str, context: str = "", unknown: str = "error") -> tuple[list[int], int]:
    """Ids of context + text and the index of the first scored one (the first character of `text`
    is only context unless a `context` is given); what every scorer here reads."""
    encoded = []
    for part, what in ((context, "context"), (text, "scored")):
        try:
            encoded.append(vocab.encode(part, unknown=unknown))
        except CharRNNError as exc:  # "<what> text contains ..."
            raise CharRNNError(f"{what} {exc}; use --unknown skip to drop them") from None
    ids = encoded[0] + encoded[1]
    scored_from = len(encoded[0]) if context else 1
    if context and scored_from == 0:
        raise CharRNNError("the context has no character the model knows")
    if len(ids) - scored_from < 1:
        raise CharRNNError("nothing to score: the text needs at least 2 characters the model knows "
                           "(the first one is only context)")
    return ids, scored_from


@torch.inference_mode()
def score_text(model: CharRNN, vocab: Vocab, text: str, *, context: str = "", unknown: str = "error",
               per_char: bool = False, chunk: int = 4096) -> TextScore:
    """Score `text` under `model`. With `context`, every character of `text` is scored after it.

    `unknown="skip"` drops characters the vocabulary lacks (they are then neither scored nor
    context); "error" names them.
    """
    if not isinstance(chunk, int) or chunk < 1:
        raise CharRNNError(f"chunk must be a positive integer, got {chunk!r}")
    ids, scored_from = encode_scored(vocab, text, context, unknown)
    model.eval()
    apply_threads()  # the planned thread count (charrnn.threads), once per process
    device = model.head.weight.device
    all_ids = torch.tensor(ids, dtype=torch.long, device=device)
    total = 0.0
    count = 0
    pieces: list[np.ndarray] = []
    hidden: Hidden | None = None
    n = len(ids)
    for start in range(0, n - 1, chunk):
        stop = min(start + chunk, n - 1)
        x = all_ids[start:stop].unsqueeze(0)
        y = all_ids[start + 1 : stop + 1]
        logits, hidden = model(x, hidden)
        losses = F.cross_entropy(logits[0].float(), y, reduction="none").double()
        first = max(scored_from - 1 - start, 0)  # positions whose target is still context
        if first:
            losses = losses[first:]
        if losses.numel():
            total += float(losses.sum())
            count += losses.numel()
            if per_char:
                pieces.append(losses.cpu().numpy())
    surprisal = np.concatenate(pieces) if per_char else None
    scored_text = vocab.decode(ids[scored_from:]) if per_char else None
    return TextScore(num_chars=count, total_nats=total, surprisal=surprisal, scored_text=scored_text,
                     first_position=0 if context else 1)


def surprisal_lines(result: TextScore) -> list[str]:
    """The per-character dump as TSV lines: position in the text, character (escaped), nats, bits."""
    if result.surprisal is None or result.scored_text is None:
        raise CharRNNError("this score was computed without per-character surprisal (per_char=False)")
    lines = ["position\tchar\tnats\tbits\n"]
    escape = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}
    for i, (char, nats) in enumerate(zip(result.scored_text, result.surprisal.tolist(), strict=True)):
        lines.append(f"{i + result.first_position}\t{escape.get(char, char)}\t{nats:.5f}\t{nats / LN2:.5f}\n")
    return lines


def ngram_score(vocab: Vocab, train_text: str, text: str, order: int, *, context: str = "", unknown: str = "error",
                per_char: bool = False) -> TextScore:
    """Score `text` as `score_text` does (same characters, same positions), under an interpolated
    Kneser-Ney character n-gram model of `order` fitted on `train_text` (see `charrnn.ngram`)."""
    from .ngram import NgramModel

    ids, scored_from = encode_scored(vocab, text, context, unknown)
    train_ids = vocab.encode(train_text, unknown="skip")  # the model's own training text: all known
    surprisal = NgramModel.fit(train_ids, order, len(vocab)).surprisal(ids)[scored_from - 1 :]
    return TextScore(num_chars=len(surprisal), total_nats=float(surprisal.sum()),
                     surprisal=surprisal if per_char else None,
                     scored_text=vocab.decode(ids[scored_from:]) if per_char else None,
                     first_position=0 if context else 1)
