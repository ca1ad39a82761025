"""Neuron activations for the playground's neuron panel: each layer's hidden output over a text.

This stands in for the library's per-step internals (issue 13 item 4 / issue 14:
`charrnn/internals.py`, hidden and cell states and gates per layer); once that lands, `hidden_states`
becomes a call to it. Until then the recurrent core is run one layer at a time (a one-layer copy of
each layer's weights), in chunks, carrying the state: memory stays bounded by the chunk.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..model import CharRNN
from ..vocab import Vocab

CHUNK = 1024
TOP_CELLS = 12


def _single_layer(model: CharRNN, layer: int) -> nn.Module:
    rnn = model.rnn
    config = model.config
    cls = type(rnn)
    kwargs = {"nonlinearity": rnn.nonlinearity} if config.model == "rnn" else {}
    input_size = config.embed_dim if layer == 0 else config.hidden_size
    one = cls(input_size, config.hidden_size, 1, batch_first=True, **kwargs)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(one, f"{name}_l0").copy_(getattr(rnn, f"{name}_l{layer}"))
    return one.to(model.head.weight.device).eval()


@torch.inference_mode()
def hidden_states(model: CharRNN, vocab: Vocab, text: str, layer: int, unknown: str = "error") -> np.ndarray:
    """(len(ids), hidden_size) float32: layer `layer`'s output after reading each character of `text`,
    starting from the zero state (characters the vocabulary lacks are dropped with unknown="skip")."""
    ids = vocab.encode(text, unknown=unknown)
    device = model.head.weight.device
    layers = [_single_layer(model, i) for i in range(layer + 1)]
    states: list = [None] * len(layers)
    out = []
    for start in range(0, len(ids), CHUNK):
        x = model.embed(torch.tensor([ids[start : start + CHUNK]], dtype=torch.long, device=device))
        for i, module in enumerate(layers):
            x, states[i] = module(x, states[i])
        out.append(x[0].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), np.float32)


def ranked_cells(states: np.ndarray, top: int = TOP_CELLS) -> list[int]:
    """The cells that vary most over the text (the ones worth looking at first)."""
    if len(states) == 0:
        return []
    spread = states.std(axis=0)
    return np.argsort(-spread, kind="stable")[:top].tolist()
