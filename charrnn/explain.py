"""Look inside a model reading a text: the numbers behind every view of `charrnn explain`.

One pass of `internals.iter_internals` over the text, a chunk at a time, feeds every view:

- **predictions**: the probability and surprisal of each character, the entropy and top-k candidates
  the model had for it;
- **cells**: activations of chosen cells (hidden h or cell c of any layer), tanh-scaled to [-1, 1];
- **cell finder**: every cell of every layer scored against named properties of the text
  (`charrnn.properties`): ROC AUC for binary ones (from 256-bin histograms of the int8-quantised
  activation, so every cell is scored in constant memory), Pearson r for numeric ones; the chance
  level is measured by scoring every cell against the same property shifted by half the text
  (a control that keeps both series' autocorrelation) and reporting the best control score;
- **gate saturation**: the fraction of steps each sigmoid gate unit spends below 0.1 / above 0.9;
- **temperature lens**: one position's next-character distribution under several temperatures and
  after top-k / top-p, through the sampler's own `sampling_distribution`.

Memory: the model, one chunk, the finder's histograms (properties x cells x 256) and what the page
shows (per position: top-k candidates; per shown cell: one value). Every cell's quantised activation
is spooled to a temporary file (1 byte per cell and position) so the shown cells -- known only once
the finder has ranked them all -- are read back without a second run of the network.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cell_finder import CellFinder, PropertyResult
from .errors import CharRNNError
from .internals import DEFAULT_CHUNK
from .properties import Property

SATURATED_LOW, SATURATED_HIGH = 0.1, 0.9
LENS_CONTEXT = 40
SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z"), "rnn": ()}


# ----------------------------------------------------------------------------------------------
# cells


@dataclass(frozen=True, order=True)
class CellRef:
    """One unit: `layer` counted from 1, `kind` "h" (hidden state) or "c" (LSTM cell state), `unit` from 0."""

    layer: int
    kind: str
    unit: int

    def __str__(self) -> str:
        return f"{self.layer}:{self.kind}:{self.unit}"


def cell_kinds(model_type: str) -> tuple[str, ...]:
    return ("h", "c") if model_type == "lstm" else ("h",)


def parse_cell(spec: str, model_type: str, num_layers: int, hidden_size: int) -> CellRef:
    """'L:K:I' (layer from 1, h or c, unit from 0), e.g. '2:c:37'; out of range is one CharRNNError."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*([hc])\s*:\s*(\d+)\s*", spec)
    if not m:
        raise CharRNNError(f"a cell is LAYER:h|c:UNIT, e.g. 2:c:37 (layer from 1, unit from 0), got {spec!r}")
    layer, kind, unit = int(m.group(1)), m.group(2), int(m.group(3))
    if not 1 <= layer <= num_layers:
        raise CharRNNError(f"cell {spec}: layer {layer} is out of range; this model has layers 1..{num_layers}")
    if kind not in cell_kinds(model_type):
        raise CharRNNError(f"cell {spec}: a {model_type.upper()} has no cell state c; use h")
    if not 0 <= unit < hidden_size:
        raise CharRNNError(f"cell {spec}: unit {unit} is out of range; each layer has units 0..{hidden_size - 1}")
    return CellRef(layer, kind, unit)


def _cell_column(cell: CellRef, model_type: str, hidden_size: int) -> int:
    kinds = cell_kinds(model_type)
    return ((cell.layer - 1) * len(kinds) + kinds.index(cell.kind)) * hidden_size + cell.unit


def _column_cell(column: int, model_type: str, hidden_size: int) -> CellRef:
    kinds = cell_kinds(model_type)
    block, unit = divmod(column, hidden_size)
    layer, kind = divmod(block, len(kinds))
    return CellRef(layer + 1, kinds[kind], unit)


def scaled_cells(chunk: Any, model_type: str) -> np.ndarray:
    """Every cell of a chunk of internals as (T, C) float32 in [-1, 1]: h as it is (tanh of it for a
    ReLU RNN), c through tanh (it is unbounded); columns layer by layer, h then c."""
    blocks = []
    for layer in chunk.layers:
        h = layer.hidden
        blocks.append(h if model_type != "rnn" or np.abs(h).max(initial=0) <= 1 else np.tanh(h))
        if layer.cell is not None:
            blocks.append(np.tanh(layer.cell))
    return np.concatenate(blocks, axis=1).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------
# records


@dataclass
class Predictions:
    """Per character t of the text (index 0 has nothing before it: NaN / -1)."""

    prob: np.ndarray  # (n,) probability the model gave character t
    surprisal: np.ndarray  # (n,) -ln prob, nats
    entropy: np.ndarray  # (n,) entropy of the distribution character t was predicted from, nats
    top_ids: np.ndarray  # (n, k) the k most likely characters for position t, best first (-1 at t=0)
    top_probs: np.ndarray  # (n, k) their probabilities

    def most_surprised(self, count: int = 10) -> list[int]:
        """Positions of the `count` highest-surprisal characters, most surprising first."""
        s = np.nan_to_num(self.surprisal, nan=-np.inf)
        return [int(i) for i in np.argsort(-s, kind="stable")[:count]]

    def least_surprised(self, count: int = 10) -> list[int]:
        s = np.nan_to_num(self.surprisal, nan=np.inf)
        return [int(i) for i in np.argsort(s, kind="stable")[:count]]


@dataclass
class GateSaturation:
    """Per layer and sigmoid gate: fraction of steps each unit spent < 0.1 (left) and > 0.9 (right)."""

    layer: int  # from 1
    gate: str  # i, f, o (LSTM) or r, z (GRU)
    left: np.ndarray  # (H,)
    right: np.ndarray  # (H,)


@dataclass
class TemperatureLens:
    """The next-character distribution at one position under several decoding settings."""

    position: int  # the character being predicted
    context: str  # the text before it (its end)
    actual: str  # the character that came
    chars: list[str]  # the vocabulary, in id order
    rows: list[tuple[str, np.ndarray]]  # (setting, probabilities over the vocabulary)


@dataclass
class NgramComparison:
    """Where the network beats a smoothed n-gram model and where it loses (per character, nats)."""

    order: int
    model_nats: float  # mean over the compared characters
    ngram_nats: float
    difference: np.ndarray  # (n,) n-gram surprisal - model surprisal (positive: the network does better); NaN at 0
    by_char: list[tuple[str, int, float]]  # (character, count, mean difference), best for the network first
    model_wins: list[int]  # positions where the network gains most over the n-gram
    ngram_wins: list[int]  # positions where the n-gram gains most over the network


@dataclass
class Explanation:
    """Everything `charrnn explain` shows, as plain arrays and records."""

    text: str
    chars: list[str]  # the model's vocabulary, in id order (what top_ids index)
    model_type: str
    num_layers: int
    hidden_size: int
    predictions: Predictions
    cells: dict[str, np.ndarray]  # "L:K:I" -> (n,) float32 in [-1, 1], the shown cells
    user_cells: list[str]
    finder: list[PropertyResult]
    gates: list[GateSaturation]
    lens: TemperatureLens | None
    ngram: NgramComparison | None = None
    source: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# the pass


def _softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def encode_text(vocab: Any, text: str, unknown: str = "error") -> tuple[str, list[int]]:
    """The characters explained (unknown ones dropped with "skip") and their ids; bad input is one error."""
    if not text:
        raise CharRNNError("the text is empty: nothing to explain")
    try:
        ids = vocab.encode(text, unknown=unknown)
    except CharRNNError as exc:
        raise CharRNNError(f"{exc}; use --unknown skip to drop them") from None
    if len(ids) < 2:
        raise CharRNNError("nothing to explain: the text needs at least 2 characters the model knows")
    return (text if len(ids) == len(text) else vocab.decode(ids)), ids


def explain(model: Any, vocab: Any, text: str, *, cells: Iterable[str] = (), properties: Sequence[Property] | None = None,
            after: Iterable[str] = (".",), patterns: Iterable[str] = (), top_k: int = 5, top_cells: int = 3,
            lens_position: int | None = None, temperatures: Sequence[float] = (0.5, 1.0, 1.5),
            lens_top_k: int | None = 5, lens_top_p: float | None = 0.9, ngram: Any = None, unknown: str = "error",
            chunk: int = DEFAULT_CHUNK, progress: Callable[[int, int], None] | None = None) -> Explanation:
    """Run `model` over `text` once and compute every view (see the module docstring).

    `cells` are "L:K:I" strings the user wants shown; the finder's `top_cells` best per property are
    shown too. `lens_position` is the character whose distribution the temperature lens shows
    (default: where the model was least sure, after at least 40 characters of text). `ngram` is a
    fitted `charrnn.ngram.NgramModel` to compare against, or None.
    """
    from .internals import iter_internals
    from .properties import text_properties

    config = model.config
    mtype, layers, hsize = config.model, config.num_layers, config.hidden_size
    if not isinstance(top_k, int) or not 1 <= top_k <= 100:
        raise CharRNNError(f"top-k candidates must be in 1..100, got {top_k!r}")
    if not isinstance(top_cells, int) or not 0 <= top_cells <= 100:
        raise CharRNNError(f"top cells per property must be in 0..100, got {top_cells!r}")
    user = [parse_cell(c, mtype, layers, hsize) for c in cells]  # checked before any work
    lens_settings(temperatures, lens_top_k, lens_top_p)
    text, ids = encode_text(vocab, text, unknown)
    n = len(ids)
    if lens_position is not None and not 1 <= lens_position < n:
        raise CharRNNError(f"the lens position must be in 1..{n - 1} (a character with text before it), "
                           f"got {lens_position}")
    props = list(properties) if properties is not None else text_properties(text, after=after, patterns=patterns)
    for p in props:
        if len(p.values) != n:
            raise CharRNNError(f"property {p.name!r} has {len(p.values)} values for a text of {n} characters")
    top_k = min(top_k, len(vocab))
    num_cells = layers * len(cell_kinds(mtype)) * hsize
    finder = CellFinder(props, num_cells)
    prob = np.full(n, np.nan, dtype=np.float32)
    entropy = np.full(n, np.nan, dtype=np.float32)
    top_ids = np.full((n, top_k), -1, dtype=np.int32)
    top_probs = np.zeros((n, top_k), dtype=np.float32)
    gate_names = SIGMOID_GATES.get(mtype, ())
    sat = {(k, g): [np.zeros(hsize), np.zeros(hsize)] for k in range(layers) for g in gate_names}
    lens_logits, lens_at, lens_entropy = None, None, -1.0
    warm = min(LENS_CONTEXT, n // 2)  # the default lens position has at least this much text before it
    id_arr = np.asarray(ids)
    with tempfile.TemporaryDirectory(prefix="charrnn-explain-") as tmp:
        spool_path = os.path.join(tmp, "cells.int8")
        with open(spool_path, "wb") as spool:
            for part in iter_internals(model, ids, chunk=chunk, gates=bool(gate_names)):
                s, rows = part.start, len(part)
                probs = _softmax(part.logits)  # row t predicts character s + t + 1
                nxt = id_arr[s + 1 : s + rows + 1]
                m = len(nxt)
                prob[s + 1 : s + 1 + m] = probs[np.arange(m), nxt]
                with np.errstate(divide="ignore", invalid="ignore"):
                    ent = -(probs * np.log(np.where(probs > 0, probs, 1.0))).sum(axis=1)
                entropy[s + 1 : s + 1 + m] = ent[:m]
                order = np.argpartition(-probs, top_k - 1, axis=1)[:, :top_k] if top_k < probs.shape[1] else \
                    np.tile(np.arange(probs.shape[1]), (rows, 1))
                picked = np.take_along_axis(probs, order, axis=1)
                by = np.argsort(-picked, axis=1, kind="stable")
                top_ids[s + 1 : s + 1 + m] = np.take_along_axis(order, by, axis=1)[:m]
                top_probs[s + 1 : s + 1 + m] = np.take_along_axis(picked, by, axis=1)[:m]
                if lens_position is not None:
                    if s <= lens_position - 1 < s + rows:
                        lens_logits, lens_at = part.logits[lens_position - 1 - s].copy(), lens_position
                else:  # the least sure prediction once the model has read some text (the first has no context)
                    skip = max(0, min(m, warm - s - 1))
                    if m > skip and float(ent[skip:m].max()) > lens_entropy:
                        t = skip + int(ent[skip:m].argmax())
                        lens_logits, lens_at, lens_entropy = part.logits[t].copy(), s + t + 1, float(ent[t])
                for k, layer in enumerate(part.layers):
                    for g in gate_names:
                        values = layer.gates[g]
                        sat[(k, g)][0] += (values < SATURATED_LOW).sum(axis=0)
                        sat[(k, g)][1] += (values > SATURATED_HIGH).sum(axis=0)
                x = scaled_cells(part, mtype)
                quantised = np.rint(x * 127).astype(np.int8)
                finder.add(s, x, quantised)
                spool.write(quantised.tobytes())
                if progress is not None:
                    progress(s + rows, n)
        finder_results = finder.results(lambda column: _column_cell(column, mtype, hsize), top_cells)
        shown = list(dict.fromkeys([*user, *(c.cell for r in finder_results for c in r.ranked)]))
        columns = [_cell_column(c, mtype, hsize) for c in shown]
        values = np.zeros((len(shown), n), dtype=np.float32)
        with open(spool_path, "rb") as spool:
            step = max(1, (8 << 20) // num_cells)
            for s in range(0, n, step):
                rows = min(step, n - s)
                block = np.frombuffer(spool.read(rows * num_cells), dtype=np.int8).reshape(rows, num_cells)
                values[:, s : s + rows] = block[:, columns].T / 127.0
    surprisal = -np.log(np.where(np.isnan(prob), np.nan, np.maximum(prob, 1e-30))).astype(np.float32)
    predictions = Predictions(prob, surprisal, entropy, top_ids, top_probs)
    gates = [GateSaturation(k + 1, g, sat[(k, g)][0] / n, sat[(k, g)][1] / n) for k in range(layers) for g in gate_names]
    lens = temperature_lens(lens_logits, lens_at, text, vocab.chars, temperatures, lens_top_k, lens_top_p) \
        if lens_logits is not None else None
    result = Explanation(text, list(vocab.chars), mtype, layers, hsize, predictions, {str(c): values[i] for i, c in enumerate(shown)},
                         [str(c) for c in user], finder_results, gates, lens)
    if ngram is not None:
        result.ngram = compare_with_ngram(text, surprisal, ngram.surprisal(ids), ngram.order)
    return result


def lens_settings(temperatures: Sequence[float] = (0.5, 1.0, 1.5), top_k: int | None = 5,
                  top_p: float | None = 0.9) -> list[tuple[str, Any]]:
    """The lens's (label, `sample.Decoding`) pairs, each checked by the sampler's own rules."""
    from .sample import Decoding

    if not temperatures:
        raise CharRNNError("the temperature lens needs at least one temperature")
    settings = [(f"T={t:g}", Decoding(temperature=t)) for t in temperatures]
    if top_k is not None:
        settings.append((f"T=1 top-k {top_k}", Decoding(temperature=1.0, top_k=top_k)))
    if top_p is not None:
        settings.append((f"T=1 top-p {top_p:g}", Decoding(temperature=1.0, top_p=top_p)))
    return settings


def temperature_lens(logits: np.ndarray, position: int, text: str, chars: Sequence[str],
                     temperatures: Sequence[float] = (0.5, 1.0, 1.5), top_k: int | None = 5,
                     top_p: float | None = 0.9, context_chars: int = 40) -> TemperatureLens:
    """The distribution for `text[position]` from these logits at each temperature, and at T=1 after
    top-k and top-p, computed by the sampler's own decoding chain."""
    from .sample import sampling_distribution

    settings = lens_settings(temperatures, top_k, top_p)
    rows = [(label, sampling_distribution(logits[None, :], d)[0]) for label, d in settings]
    return TemperatureLens(position, text[max(0, position - context_chars) : position], text[position],
                           list(chars), rows)


def compare_with_ngram(text: str, model_surprisal: np.ndarray, ngram_surprisal: np.ndarray, order: int,
                       top: int = 12, min_count: int = 5) -> NgramComparison:
    """Per character, n-gram surprisal minus the network's (both for text[1:]): where each wins."""
    diff = np.full(len(text), np.nan)
    diff[1:] = ngram_surprisal - model_surprisal[1:]
    chars = np.array(list(text[1:]))
    by_char = []
    for ch in np.unique(chars):
        picked = diff[1:][chars == ch]
        if len(picked) >= min_count:
            by_char.append((str(ch), len(picked), float(picked.mean())))
    by_char.sort(key=lambda r: -r[2])
    ranked = np.argsort(-np.nan_to_num(diff, nan=0.0), kind="stable")
    return NgramComparison(order, float(np.nanmean(model_surprisal[1:])), float(ngram_surprisal.mean()), diff,
                           by_char, [int(i) for i in ranked[:top]], [int(i) for i in ranked[::-1][:top]])


MAX_CHARS = 2_000_000  # what one page can show: its spans and embedded arrays grow with the text


def explain_run(checkpoint: Any, text: str, out_dir: str | os.PathLike, *, ngram_order: int | None = None,
                corpus: str | os.PathLike | None = None, encoding: str = "utf-8", title: str | None = None,
                source: dict[str, Any] | None = None, **options: Any) -> tuple[Explanation, dict[str, Any]]:
    """Explain `text` under a loaded checkpoint and write the page and figures into `out_dir`.

    With `ngram_order`, an n-gram model of that order is fitted on the run's training text (its
    recorded corpus, or `corpus`, minus the validation split) and compared. `options` go to `explain`.
    Returns the explanation and the written paths."""
    from .explain_page import write_explanation
    from .ngram import NgramModel
    from .runtext import recorded_split

    if len(text) > MAX_CHARS:
        raise CharRNNError(f"the text has {len(text):,} characters; explain at most {MAX_CHARS:,} at a time "
                           "(--start/--length pick a slice)")
    ngram = None
    if ngram_order is not None:
        train_text, _ = recorded_split(checkpoint.meta, corpus, encoding)
        ngram = NgramModel.fit(checkpoint.vocab.encode(train_text, unknown="skip"), ngram_order, len(checkpoint.vocab))
    result = explain(checkpoint.model, checkpoint.vocab, text, ngram=ngram, **options)
    result.source = {"checkpoint": str(checkpoint.path), **(source or {})}
    from .timeline import timeline

    run_dir = Path(checkpoint.path).parent
    written = write_explanation(result, out_dir, title or f"charrnn explain: {run_dir.name}",
                                timeline=timeline(run_dir) or timeline(run_dir, checkpoint.meta))
    return result, written
