"""The neuron panel's numbers: one layer's hidden or cell state over a text, and the cells worth a look.

The states are the library's per-step internals (`internals.run_internals`: every layer's h and,
for an LSTM, c, computed by the model's own recurrent core), scaled to [-1, 1] as `charrnn explain`
shows cells (`explain.scaled_cells`: h as it is, c through tanh). The cells worth a look are the
chosen layer's units that vary most over the text, and the cell finder's best units for named
properties of the text (`explain.explain`: inside quotes, line position, word start, ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import CharRNN
from ..vocab import Vocab

TOP_CELLS = 12  # the layer's units that vary most, offered as buttons
FINDER_CELLS = 3  # the finder's best units per property
KIND_OF = {"hidden": "h", "cell": "c"}  # the panel's names for explain's cell kinds


def kinds(model: CharRNN) -> tuple[str, ...]:
    """The states the panel offers for this model: hidden, and cell for an LSTM."""
    from ..explain import cell_kinds

    return tuple(name for name, k in KIND_OF.items() if k in cell_kinds(model.config.model))


def states(model: CharRNN, ids: list[int], layer: int, kind: str) -> np.ndarray:
    """(len(ids), hidden_size) float32 in [-1, 1]: layer `layer`'s (from 0) hidden or cell state
    after reading each character, from the zero state."""
    from ..explain import cell_kinds, scaled_cells
    from ..internals import run_internals

    config = model.config
    every = scaled_cells(run_internals(model, ids, gates=False), config.model)  # layer by layer, h then c
    block = layer * len(cell_kinds(config.model)) + cell_kinds(config.model).index(KIND_OF[kind])
    return every[:, block * config.hidden_size : (block + 1) * config.hidden_size]


def ranked_cells(values: np.ndarray, top: int = TOP_CELLS) -> list[int]:
    """The units that vary most over the text (the ones worth looking at first)."""
    if len(values) == 0:
        return []
    return np.argsort(-values.std(axis=0), kind="stable")[:top].tolist()


def finder(model: CharRNN, vocab: Vocab, text: str, top: int = FINDER_CELLS) -> list[dict[str, Any]]:
    """The cell finder's best units of every layer for each property the text has (constant ones
    are left out): what `charrnn explain` ranks, as plain records."""
    from ..explain import explain

    result = explain(model, vocab, text, top_cells=top, top_k=1, temperatures=(1.0,), lens_top_k=None,
                     lens_top_p=None)
    names = {k: name for name, k in KIND_OF.items()}
    return [{"property": p.name, "description": p.description, "statistic": p.statistic, "chance": p.chance,
             "control": round(float(p.control), 4),
             "cells": [{"layer": s.cell.layer - 1, "kind": names[s.cell.kind], "cell": s.cell.unit,
                        "score": round(float(s.score), 4)} for s in p.ranked]}
            for p in result.finder if p.present]
