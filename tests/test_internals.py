"""Per-step internals equal what the model itself computes, layer by layer, chunk after chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.internals import GATES, iter_internals, run_internals
from charrnn.model import CharRNN


def _model(kind: str, layers: int, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=11, embed_dim=6, hidden_size=9, num_layers=layers, model=kind,
                                dropout=0.2))
    with torch.no_grad():  # larger weights than the initialisation: gates saturate, states swing
        for p in model.rnn.parameters():
            p.mul_(4.0)
    return model.double().eval()  # float64: the comparison measures the method, not float32 rounding


def _stepwise(model: CharRNN, ids: np.ndarray):
    """The model's own forward, one character at a time: every layer's h (and c) after each step."""
    hidden = None
    hs, cs, logits = [], [], []
    with torch.no_grad():
        for i in ids:
            out, hidden = model(torch.tensor([[int(i)]]), hidden)  # float64 throughout
            logits.append(out[0, 0].numpy())
            h = hidden[0] if isinstance(hidden, tuple) else hidden
            hs.append(h[:, 0].numpy().copy())
            if isinstance(hidden, tuple):
                cs.append(hidden[1][:, 0].numpy().copy())
    return np.stack(hs, 1), (np.stack(cs, 1) if cs else None), np.stack(logits)  # (L, T, H)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_states_and_logits_equal_the_models_forward(kind, layers):
    model = _model(kind, layers)
    ids = np.random.default_rng(1).integers(0, 11, size=53)
    got = run_internals(model, ids, chunk=7)  # the state crosses 7 chunk boundaries
    hs, cs, logits = _stepwise(model, ids)
    np.testing.assert_allclose(got.logits, logits, rtol=1e-4, atol=1e-5)
    for k, layer in enumerate(got.layers):
        np.testing.assert_allclose(layer.hidden, hs[k], rtol=1e-4, atol=1e-5)
        if kind == "lstm":
            np.testing.assert_allclose(layer.cell, cs[k], rtol=1e-4, atol=1e-5)
        else:
            assert layer.cell is None
        assert set(layer.gates) == set(GATES[kind])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gates_reproduce_the_states_through_the_cell_equations(kind):
    """The gates returned are the ones nn.LSTM/nn.GRU used: the cell's update equations, applied to
    them, give back the states the model produced."""
    model = _model(kind, 2, seed=3)
    ids = np.random.default_rng(2).integers(0, 11, size=40)
    got = run_internals(model, ids, chunk=16)
    hs, cs, _ = _stepwise(model, ids)
    for k, layer in enumerate(got.layers):
        g = layer.gates
        h_prev = np.vstack([np.zeros((1, 9)), hs[k][:-1]])
        if kind == "lstm":
            c_prev = np.vstack([np.zeros((1, 9)), cs[k][:-1]])
            np.testing.assert_allclose(g["f"] * c_prev + g["i"] * g["g"], cs[k], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(g["o"] * np.tanh(cs[k]), hs[k], rtol=1e-4, atol=1e-5)
            assert g["f"].min() >= 0 and g["f"].max() <= 1 and g["g"].min() >= -1
        else:
            np.testing.assert_allclose((1 - g["z"]) * g["n"] + g["z"] * h_prev, hs[k], rtol=1e-4, atol=1e-5)
        sigmoids = np.concatenate([g[n] for n in ("i", "f", "o", "r", "z") if n in g])
        assert (sigmoids < 0.1).any() and (sigmoids > 0.9).any()  # saturated gates are covered too


def test_chunks_are_constant_size_and_carry_a_given_state():
    model = _model("lstm", 2)
    ids = np.random.default_rng(4).integers(0, 11, size=30)
    chunks = list(iter_internals(model, ids, chunk=8, gates=False))
    assert [len(c) for c in chunks] == [8, 8, 8, 6] and [c.start for c in chunks] == [0, 8, 16, 24]
    assert chunks[0].layers[0].gates == {}
    # Starting from the state after the first 10 characters gives the rest of the full run.
    with torch.no_grad():
        _, state = model(torch.tensor([ids[:10].tolist()]))
    rest = run_internals(model, ids[10:], hidden=state, chunk=5)
    full = run_internals(model, ids, chunk=64)
    np.testing.assert_allclose(rest.layers[1].cell, full.layers[1].cell[10:], rtol=1e-4, atol=1e-5)


def test_bad_input_is_one_error():
    model = _model("lstm", 1)
    with pytest.raises(CharRNNError, match="empty"):
        run_internals(model, [])
    with pytest.raises(CharRNNError, match="0..10"):
        run_internals(model, [3, 11])
    with pytest.raises(CharRNNError, match="chunk"):
        run_internals(model, [1, 2], chunk=0)
