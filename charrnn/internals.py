"""What the network computes at every step: each layer's hidden state, cell state and gates.

`iter_internals` runs a model over a text one chunk at a time and yields, for every position and
every layer, the hidden state h, the LSTM's cell state c, the gate activations (LSTM: i, f, g, o;
GRU: r, z, n) and the logits -- memory is constant per chunk, whatever the text's length.

How, and why it equals the model's own forward: each layer runs as the model's own recurrent core
(the layer's weights, nothing copied), which gives h at every step with the fused kernel. Given
h_{t-1} for every t, the gate pre-activations of a whole chunk are one matrix product -- the
recurrence is already resolved -- and the LSTM's cell state is the linear recurrence
c_t = f_t * c_{t-1} + i_t * g_t, computed by a log-depth scan. `tests/test_internals.py` checks h, c
and the logits against `CharRNN.forward` run one character at a time, layer by layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .errors import CharRNNError
from .model import CharRNN, Hidden

GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn": ()}
GATE_NAMES = {"i": "input", "f": "forget", "g": "candidate", "o": "output", "r": "reset", "z": "update",
              "n": "candidate"}
DEFAULT_CHUNK = 2048  # rows per chunk: each torch.lstm call pays a fixed cost (oneDNN lays out the weights), so
# 2,048 explains 100,000 characters with a 2x512 LSTM in 24 s against 36 s at 512, for ~250 MB more (BENCHMARKS.md)


@dataclass
class LayerSteps:
    """One layer over a stretch of text: arrays of shape (T, hidden_size), float32."""

    hidden: np.ndarray  # h_t, the layer's output at each position
    cell: np.ndarray | None = None  # c_t (LSTM only; unbounded: tanh it to show it)
    gates: dict[str, np.ndarray] = field(default_factory=dict)  # LSTM i f g o, GRU r z n


@dataclass
class Internals:
    """The network at positions start .. start+T-1 of the text fed in: step t read `ids[t]`."""

    start: int  # position in the whole text of the first row
    ids: np.ndarray  # (T,) the characters read
    logits: np.ndarray  # (T, V) float32: the prediction for the character after each one
    layers: list[LayerSteps]

    def __len__(self) -> int:
        return len(self.ids)


def supports(model: CharRNN) -> bool:
    """Whether internals are computed for this model (its core is a plain nn.LSTM/GRU/RNN)."""
    core = getattr(model, "rnn", None)
    return type(core) in (nn.LSTM, nn.GRU, nn.RNN) and model.config.model in GATES and not getattr(
        core, "proj_size", 0) and not getattr(core, "bidirectional", False)


def _layer_core(model: CharRNN, layer: int) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A one-layer core of the model's type and that layer's own weight tensors (shared, not copied)."""
    rnn = model.rnn
    kwargs = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    in_size = rnn.input_size if layer == 0 else rnn.hidden_size
    one = type(rnn)(in_size, rnn.hidden_size, 1, batch_first=True, bias=rnn.bias, **kwargs)
    one.to(device=model.head.weight.device, dtype=model.head.weight.dtype)
    params = {f"{name}_l0": getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh")}
    if rnn.bias:
        params.update({f"{name}_l0": getattr(rnn, f"{name}_l{layer}") for name in ("bias_ih", "bias_hh")})
    return one, params


def _linear_scan(decay: torch.Tensor, add: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """x_t = decay_t * x_{t-1} + add_t for t = 0..T-1 with x_{-1} = first; (T, H) -> (T, H).

    Hillis-Steele doubling: log2(T) whole-array passes instead of T tiny steps. It multiplies
    decays (all in [0, 1] for an LSTM's forget gate) and never divides, so nothing overflows.
    """
    a, b = decay.clone(), add.clone()
    b[0] += a[0] * first
    a[0] = 0.0
    shift = 1
    n = len(a)
    while shift < n:
        b_new = b.clone()
        b_new[shift:] += a[shift:] * b[:-shift]
        a_new = a.clone()
        a_new[shift:] *= a[:-shift]
        a, b = a_new, b_new
        shift *= 2
    return b


def _split(h: int, x: torch.Tensor, k: int) -> list[torch.Tensor]:
    return [x[:, i * h : (i + 1) * h] for i in range(k)]


@torch.inference_mode()
def _layer_steps(model: CharRNN, layer: tuple[nn.Module, dict[str, torch.Tensor]], x: torch.Tensor,
                 state: Hidden | None, want_gates: bool) -> tuple[LayerSteps, torch.Tensor, Hidden]:
    """Run one layer over x (T, in); return its steps, its outputs (T, H) and its final state."""
    kind = model.config.model
    core, params = layer
    out, final = functional_call(core, params, (x.unsqueeze(0), state))
    hs = out[0]  # (T, H)
    hsize = hs.shape[1]
    if kind == "rnn":
        return LayerSteps(hidden=hs.float().cpu().numpy()), hs, final
    h0 = (state[0] if isinstance(state, tuple) else state)
    h0 = hs.new_zeros(hsize) if h0 is None else h0.reshape(hsize)
    h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])  # h_{t-1} at every t
    w_ih, w_hh = params["weight_ih_l0"], params["weight_hh_l0"]
    gi = x @ w_ih.T
    gh = h_prev @ w_hh.T
    if "bias_ih_l0" in params:
        gi = gi + params["bias_ih_l0"]
        gh = gh + params["bias_hh_l0"]
    if kind == "lstm":
        i, f, g, o = _split(hsize, gi + gh, 4)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c0 = state[1].reshape(hsize) if state is not None else hs.new_zeros(hsize)
        cell = _linear_scan(f, i * g, c0)
        gates = {"i": i, "f": f, "g": g, "o": o}
        steps = LayerSteps(hidden=hs.float().cpu().numpy(), cell=cell.float().cpu().numpy())
    else:  # gru: r, z from both sides; the candidate applies r to the recurrent side only
        ir, iz, in_ = _split(hsize, gi, 3)
        hr, hz, hn = _split(hsize, gh, 3)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        gates = {"r": r, "z": z, "n": torch.tanh(in_ + r * hn)}
        steps = LayerSteps(hidden=hs.float().cpu().numpy())
    if want_gates:
        steps.gates = {name: value.float().cpu().numpy() for name, value in gates.items()}
    return steps, hs, final


def check_ids(model: CharRNN, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    if arr.size == 0:
        raise CharRNNError("the text is empty: nothing to run the model over")
    if arr.min() < 0 or arr.max() >= model.config.vocab_size:
        raise CharRNNError(f"character ids must be in 0..{model.config.vocab_size - 1}")
    return arr


@torch.inference_mode()
def iter_internals(model: CharRNN, ids: Sequence[int] | np.ndarray, *, chunk: int = DEFAULT_CHUNK,
                   gates: bool = True, hidden: Hidden | None = None) -> Iterator[Internals]:
    """Run `model` over `ids` and yield the internals of `chunk` positions at a time, in order.

    The state is carried from chunk to chunk exactly as `CharRNN.forward` carries it (one stream,
    starting from `hidden`, zero by default), so row t of the chunk starting at s is the network
    after reading ids[0 .. s+t]. Only one chunk's arrays are alive at a time. `gates=False` skips
    the gate arrays (the cheaper pass when only states are wanted).
    """
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise CharRNNError(f"chunk must be a positive integer, got {chunk!r}")
    if not supports(model):
        raise CharRNNError(f"internals are computed for LSTM, GRU and RNN cores; this model's core is "
                           f"{type(getattr(model, 'rnn', None)).__name__}")
    arr = check_ids(model, ids)
    model.eval()
    device = model.head.weight.device
    num_layers = model.config.num_layers
    if hidden is None:
        states: list[Hidden | None] = [None] * num_layers
    elif isinstance(hidden, tuple):
        states = [(hidden[0][k : k + 1], hidden[1][k : k + 1]) for k in range(num_layers)]
    else:
        states = [hidden[k : k + 1] for k in range(num_layers)]
    cores = [_layer_core(model, k) for k in range(num_layers)]  # built once: construction initialises weights
    for start in range(0, len(arr), chunk):
        piece = torch.from_numpy(arr[start : start + chunk]).to(device)
        x = model.embed(piece)  # (T, E)
        layers = []
        for k in range(num_layers):
            steps, x, states[k] = _layer_steps(model, cores[k], x, states[k], gates)
            layers.append(steps)
        logits = model.head(x).float().cpu().numpy()
        yield Internals(start=start, ids=arr[start : start + chunk], logits=logits, layers=layers)


def run_internals(model: CharRNN, ids: Sequence[int] | np.ndarray, *, gates: bool = True,
                  hidden: Hidden | None = None, chunk: int = DEFAULT_CHUNK) -> Internals:
    """All of a (short) text's internals in one record; for long texts iterate `iter_internals`."""
    parts = list(iter_internals(model, ids, chunk=chunk, gates=gates, hidden=hidden))

    def cat(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        return None if arrays[0] is None else np.concatenate(arrays)  # type: ignore[arg-type]

    layers = []
    for k in range(model.config.num_layers):
        steps = [p.layers[k] for p in parts]
        names = steps[0].gates.keys()
        layers.append(LayerSteps(hidden=np.concatenate([s.hidden for s in steps]),
                                 cell=cat([s.cell for s in steps]),
                                 gates={n: np.concatenate([s.gates[n] for s in steps]) for n in names}))
    return Internals(start=0, ids=np.concatenate([p.ids for p in parts]),
                     logits=np.concatenate([p.logits for p in parts]), layers=layers)
