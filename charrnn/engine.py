"""Inference step engines: advance a batch of hidden states by one character and return logits.

Sampling feeds one character at a time, so the cost of a step is dominated by call overhead and
by reading the weights, not by arithmetic (at batch 1 a 2x256 LSTM step is 1.7 MFLOP). Two
engines give the same logits as `CharRNN.forward`:

* `NumpyEngine` (CPU): float32 NumPy with everything that can be precomputed folded away:
  - the embedding and layer 1's input projection and biases collapse into one (V, gates*H) table,
    so layer 1 costs one matmul (its recurrent part) plus a row lookup;
  - every other layer multiplies `[h_below | h_own]` by the stacked `[W_ih | W_hh]` in one matmul:
    all layers' states live side by side in one buffer, so that pair is a plain view of it;
  - the head's bias rides along as a constant-1 column after the last layer's state;
  - LSTM gates are reordered (i, f, o, g) with the sigmoid rows pre-scaled by 1/2, so one `tanh`
    over all gates gives every nonlinearity (sigmoid(x) = (1 + tanh(x/2)) / 2);
  - every intermediate has a preallocated buffer and is written with `out=`: no allocation per step.
* `TorchEngine`: the model's own forward, one step per call, for GPUs, large CPU batches (where
  oneDNN's fused LSTM wins) and any model `NumpyEngine.computes` does not claim.

`make_engine(model, batch_size)` picks one (NumPy at small batches, torch + oneDNN at large ones
on CPU; torch on GPUs); `benchmarks/sample_speed.py` measures the choice.

Both are safe for concurrent generations in one process: neither flips a process-wide switch
(oneDNN stays as torch configures it), and the cache of folded weights is locked.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Protocol

import numpy as np
import torch

from .model import _CORES, CharRNN, Hidden
from .threads import apply as apply_threads

# From these batch sizes the torch engine (oneDNN on) is faster than NumPy on CPU: see prefers_torch.
TORCH_MIN_BATCH = 128
TORCH_MIN_BATCH_NARROW = 64  # for hidden sizes <= 256


class StepEngine(Protocol):
    """Advance `batch_size` streams by one character each."""

    batch_size: int

    def set_hidden(self, hidden: Hidden) -> None:
        """Start from this torch state (layers, batch, hidden); batch 1 is broadcast to all rows."""

    def get_hidden(self) -> Hidden:
        """The current state as torch tensors shaped as `CharRNN.forward` returns them."""

    def step(self, ids: np.ndarray) -> np.ndarray:
        """ids (batch,) int -> logits (batch, vocab) float32; the array may be reused by the next step."""

    def select(self, rows: np.ndarray) -> None:
        """Keep only these rows (in this order, repeats allowed): the new batch is len(rows)."""


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


# Folded weights per model, rebuilt when any parameter changes (an optimizer step or a load bumps
# the tensor's version; replacing a tensor changes its address): building them costs milliseconds,
# and the trainer and the temperature sweep generate from the same weights many times.
_FOLDED: weakref.WeakKeyDictionary[CharRNN, tuple[tuple, dict[str, Any]]] = weakref.WeakKeyDictionary()
_FOLDED_LOCK = threading.Lock()  # generations in several threads share one model's fold


def _weights_key(model: CharRNN) -> tuple:
    return (model.config, *((p.data_ptr(), p._version, p.device) for p in model.parameters()))


def fold_weights(model: CharRNN) -> dict[str, Any]:
    """The model's weights, folded and laid out for `NumpyEngine.step` (see the module docstring)."""
    kind, L, H = model.config.model, model.config.num_layers, model.config.hidden_size
    rnn = model.rnn
    with torch.no_grad():
        embed = _np(model.embed.weight)
        w_ih = [_np(getattr(rnn, f"weight_ih_l{i}")) for i in range(L)]
        w_hh = [_np(getattr(rnn, f"weight_hh_l{i}")) for i in range(L)]
        b_ih = [_np(getattr(rnn, f"bias_ih_l{i}")) for i in range(L)]
        b_hh = [_np(getattr(rnn, f"bias_hh_l{i}")) for i in range(L)]
        head_w, head_b = _np(model.head.weight), _np(model.head.bias)
    # Work in float64 while folding, so the table is as exact as the float32 model allows.
    order = _gate_order(kind, H)
    scale = _gate_scale(kind, H)
    if kind == "gru":
        # r and z take both biases; n's hidden bias sits inside r * (W_hn h + b_hn).
        in_bias = [b_ih[i] + np.concatenate([b_hh[i][: 2 * H], np.zeros(H, np.float32)]) for i in range(L)]
        hid_bias = [np.concatenate([np.zeros(2 * H, np.float32), b_hh[i][2 * H :]]) for i in range(L)]
    else:
        in_bias = [b_ih[i] + b_hh[i] for i in range(L)]
    table = embed.astype(np.float64) @ w_ih[0].T.astype(np.float64) + in_bias[0]
    table = np.ascontiguousarray((table[:, order] * scale).astype(np.float32))  # (V, G*H)
    # Weights are kept as torch lays them out, (out, in) row-major, and used through their
    # transposed views: for x @ W.T OpenBLAS streams each output's weights contiguously and
    # splits the rows between threads, which at batch 1 with 2 threads is 1.3-1.7x faster than
    # multiplying by an (in, out) row-major copy (measured; see BENCHMARKS.md).
    rows = scale[:, None]
    w_hh_t = [np.ascontiguousarray(w_hh[i][order] * rows).T for i in range(L)]  # (H, G*H) view
    w_ih_t = [np.ascontiguousarray(w_ih[i][order] * rows).T for i in range(L)]  # (I, G*H) view
    bias = [np.ascontiguousarray(in_bias[i][order] * scale) for i in range(L)]
    if kind != "gru":
        # Layers above the first: one matmul of [h_below | h_own] (N, 2H) by (2H, G*H).
        w_cat = [None] + [np.ascontiguousarray(np.hstack([w_ih[i][order], w_hh[i][order]]) * rows).T
                          for i in range(1, L)]
    # Head with its bias as an extra input column (the state buffer's constant-1 column).
    head = np.ascontiguousarray(np.hstack([head_w, head_b[:, None]])).T  # (H+1, V) view
    folded = {"table": table, "w_hh": w_hh_t, "w_ih": w_ih_t, "bias": bias, "head": head}
    if kind == "gru":
        folded["hid_bias"] = hid_bias
    else:
        folded["w_cat"] = w_cat
    return folded

def _gate_order(kind: str, H: int) -> np.ndarray:
    if kind == "lstm":  # torch i, f, g, o -> i, f, o, g: the three sigmoids side by side
        return np.concatenate([np.arange(0, 2 * H), np.arange(3 * H, 4 * H), np.arange(2 * H, 3 * H)])
    return np.arange({"lstm": 4, "gru": 3, "rnn": 1}[kind] * H)

def _gate_scale(kind: str, H: int) -> np.ndarray:
    if kind == "lstm":
        return np.concatenate([np.full(3 * H, 0.5, np.float32), np.ones(H, np.float32)])
    if kind == "gru":
        return np.concatenate([np.full(2 * H, 0.5, np.float32), np.ones(H, np.float32)])
    return np.ones(H, np.float32)


class NumpyEngine:
    """CharRNN inference in float32 NumPy (CPU), one character per stream per `step`.

    It recomputes the network from its parameters, so it claims only the models whose forward it
    is known to reproduce (`computes`); anything else runs on `TorchEngine`.
    """

    @staticmethod
    def computes(model: CharRNN) -> bool:
        """Whether this engine computes exactly `model`'s forward (at eval): a `CharRNN` itself (not a
        subclass, which may change the forward), its core exactly torch's unidirectional, biased,
        batch-first LSTM, GRU or tanh RNN of the config's sizes, no LSTM projection, on the CPU.
        The engine-parity test runs every model type of the registry against this claim."""
        config, rnn = model.config, model.rnn
        return (type(model) is CharRNN and config.model in _CORES and type(rnn) is _CORES[config.model]
                and rnn.batch_first and rnn.bias and not rnn.bidirectional and getattr(rnn, "proj_size", 0) == 0
                and getattr(rnn, "nonlinearity", "tanh") == "tanh" and rnn.num_layers == config.num_layers
                and rnn.hidden_size == config.hidden_size and rnn.input_size == config.embed_dim
                and type(model.embed) is torch.nn.Embedding and type(model.head) is torch.nn.Linear
                and model.head.bias is not None and model.head.weight.device.type == "cpu")

    def __init__(self, model: CharRNN, batch_size: int = 1):
        if not self.computes(model):
            raise ValueError(f"NumpyEngine does not compute this model ({type(model).__name__}, {model.config.model}); "
                             "use TorchEngine")
        config = model.config
        self.kind = config.model
        self.num_layers = config.num_layers
        self.hidden_size = config.hidden_size
        self.vocab_size = config.vocab_size
        self.gates = {"lstm": 4, "gru": 3, "rnn": 1}[self.kind]
        with _FOLDED_LOCK:  # folding takes milliseconds; two threads folding the same model is wasted work
            key = _weights_key(model)
            cached = _FOLDED.get(model)
            if cached is None or cached[0] != key:
                cached = (key, fold_weights(model))
                _FOLDED[model] = cached
        self.__dict__.update(cached[1])
        self.batch_size = 0
        self._allocate(batch_size)

    def _allocate(self, n: int) -> None:
        L, H, G = self.num_layers, self.hidden_size, self.gates
        self.batch_size = n
        # All layers' h side by side, then a constant 1 for the head bias.
        self.hs = np.zeros((n, L * H + 1), np.float32)
        self.hs[:, -1] = 1.0
        self.c = np.zeros((L, n, H), np.float32) if self.kind == "lstm" else None
        self.g = np.empty((n, G * H), np.float32)
        self.gh = np.empty((n, G * H), np.float32) if self.kind == "gru" else None
        self.tmp = np.empty((n, H), np.float32)
        self.rows = np.empty((n, G * H), np.float32)
        self.logits = np.empty((n, self.vocab_size), np.float32)
        self.head_in = self.hs[:, (L - 1) * H :]  # last layer's h and the constant 1
        if self.kind == "lstm":
            # Every view one LSTM step touches, made once: at batch 1 a step is ~25 small calls,
            # and slicing afresh each time would add a fifth to their cost.
            g, hs = self.g, self.hs
            self.plan = [
                (hs[:, :H] if i == 0 else hs[:, (i - 1) * H : (i + 1) * H],  # input: h below | own h
                 self.w_hh[0] if i == 0 else self.w_cat[i],
                 None if i == 0 else self.bias[i],  # layer 1 adds its table row instead
                 g[:, : 3 * H], g[:, H : 2 * H], g[:, :H], g[:, 2 * H : 3 * H], g[:, 3 * H :],  # sigmoids, f, i, o, g
                 self.c[i], hs[:, i * H : (i + 1) * H])
                for i in range(L)]

    # -- state --------------------------------------------------------------------------------

    def set_hidden(self, hidden: Hidden) -> None:
        L, H = self.num_layers, self.hidden_size
        h = hidden[0] if isinstance(hidden, tuple) else hidden
        h_np = _np(h)  # (L, B, H)
        if h_np.shape[1] != self.batch_size:
            h_np = np.broadcast_to(h_np, (L, self.batch_size, H))
        for i in range(L):
            self.hs[:, i * H : (i + 1) * H] = h_np[i]
        if self.kind == "lstm":
            assert isinstance(hidden, tuple)
            self.c[...] = np.broadcast_to(_np(hidden[1]), self.c.shape)

    def get_hidden(self) -> Hidden:
        L, H, n = self.num_layers, self.hidden_size, self.batch_size
        h = torch.from_numpy(self.hs[:, : L * H].reshape(n, L, H).transpose(1, 0, 2).copy())
        if self.kind == "lstm":
            return h, torch.from_numpy(self.c.copy())
        return h

    def select(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.intp)
        hs = self.hs[rows]
        c = self.c[:, rows] if self.c is not None else None
        if len(rows) != self.batch_size:
            self._allocate(len(rows))
        self.hs[...] = hs
        if c is not None:
            self.c[...] = c

    # -- one step -----------------------------------------------------------------------------

    def step(self, ids: np.ndarray) -> np.ndarray:
        n, H, L = self.batch_size, self.hidden_size, self.num_layers
        hs, g = self.hs, self.g
        if n == 1:
            inp = self.table[int(ids[0])]  # a view: no copy at batch 1
        else:
            inp = np.take(self.table, ids, axis=0, out=self.rows)
        if self.kind == "lstm":
            tmp = self.tmp
            for x, w, bias, sig, f, i_gate, o_gate, g_gate, c, h in self.plan:
                np.matmul(x, w, out=g)
                g += inp if bias is None else bias
                np.tanh(g, out=g)  # i, f, o: tanh(x/2) (rows pre-scaled); g: tanh(x)
                sig *= 0.5
                sig += 0.5  # now sigmoid(x)
                c *= f
                np.multiply(i_gate, g_gate, out=tmp)
                c += tmp
                np.tanh(c, out=tmp)
                np.multiply(o_gate, tmp, out=h)  # h = o * tanh(c)
        elif self.kind == "rnn":
            for i in range(L):
                x, w, b = (hs[:, :H], self.w_hh[0], inp) if i == 0 else \
                    (hs[:, (i - 1) * H : (i + 1) * H], self.w_cat[i], self.bias[i])
                np.matmul(x, w, out=g)
                g += b
                np.tanh(g, out=hs[:, i * H : (i + 1) * H])
        else:
            for i in range(L):
                if i == 0:
                    np.copyto(g, inp)
                else:
                    np.matmul(hs[:, (i - 1) * H : i * H], self.w_ih[i], out=g)
                    g += self.bias[i]
                self._gru_layer(i)
        np.matmul(self.head_in, self.head, out=self.logits)
        return self.logits

    def _gru_layer(self, i: int) -> None:
        H, g, gh, tmp = self.hidden_size, self.g, self.gh, self.tmp
        h = self.hs[:, i * H : (i + 1) * H]
        np.matmul(h, self.w_hh[i], out=gh)
        gh += self.hid_bias[i]
        rz = g[:, : 2 * H]
        rz += gh[:, : 2 * H]
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5  # r, z = sigmoid
        n_gate = g[:, 2 * H :]
        np.multiply(g[:, :H], gh[:, 2 * H :], out=tmp)  # r * (W_hn h + b_hn)
        n_gate += tmp
        np.tanh(n_gate, out=n_gate)
        np.subtract(h, n_gate, out=tmp)
        tmp *= g[:, H : 2 * H]  # z * (h - n)
        np.add(n_gate, tmp, out=h)  # h' = (1 - z) n + z h


class TorchEngine:
    """The torch model's own forward one step at a time (for GPUs, large CPU batches with oneDNN,
    and models the NumPy engine does not compute).

    oneDNN is left as torch configures it (on, on CPUs): switching it off per call would flip a
    process-wide flag under every other thread. At batch 1 that costs speed (oneDNN rebuilds its RNN
    primitive on each call; see BENCHMARKS.md), which is why small CPU batches run on NumPy.
    """

    def __init__(self, model: CharRNN, batch_size: int = 1):
        self.model = model.eval()
        self.device = model.head.weight.device
        self.batch_size = batch_size
        self.hidden: Hidden = model.init_hidden(batch_size)
        self._ids = torch.empty((batch_size, 1), dtype=torch.long, device=self.device)

    def set_hidden(self, hidden: Hidden) -> None:
        n = self.batch_size

        def fit(t: torch.Tensor) -> torch.Tensor:
            return t.to(self.device).expand(-1, n, -1).contiguous()

        self.hidden = tuple(fit(t) for t in hidden) if isinstance(hidden, tuple) else fit(hidden)  # type: ignore[assignment]

    def get_hidden(self) -> Hidden:
        return self.hidden

    def select(self, rows: np.ndarray) -> None:
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.device)
        if isinstance(self.hidden, tuple):
            self.hidden = tuple(t.index_select(1, index) for t in self.hidden)  # type: ignore[assignment]
        else:
            self.hidden = self.hidden.index_select(1, index)
        if len(index) != self.batch_size:
            self.batch_size = len(index)
            self._ids = torch.empty((self.batch_size, 1), dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def step(self, ids: np.ndarray) -> np.ndarray:
        self._ids.copy_(torch.from_numpy(np.asarray(ids, dtype=np.int64)).view(-1, 1))
        logits, self.hidden = self.model(self._ids, self.hidden)
        return logits[:, -1].float().cpu().numpy()


def prefers_torch(model: CharRNN, batch_size: int) -> bool:
    """Whether the torch engine beats the NumPy one for this model and batch (on CPU).

    Measured on the reference CPU (benchmarks/sample_speed.py, BENCHMARKS.md "Sampling speed"):
    oneDNN's fused LSTM kernel wins once the batch is large enough for its per-call set-up to
    vanish next to the work, and sooner for narrow layers, where NumPy's separate elementwise
    passes weigh most against the matmuls: from batch 64 at hidden size <= 256, from batch 128
    at any size. Below that (and always at batch 1) NumPy wins. GRU and vanilla RNN stay on NumPy.
    """
    config = model.config
    if config.model != "lstm":
        return False
    return batch_size >= TORCH_MIN_BATCH or (batch_size >= TORCH_MIN_BATCH_NARROW and config.hidden_size <= 256)


def make_engine(model: CharRNN, batch_size: int = 1, backend: str = "auto") -> StepEngine:
    """The faster engine for this model and batch: see `prefers_torch` on CPU; torch elsewhere, and
    for every model `NumpyEngine.computes` does not claim."""
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend must be auto, numpy or torch, got {backend!r}")
    apply_threads()  # the planned thread count (charrnn.threads), once per process
    if backend == "auto":
        backend = "numpy" if NumpyEngine.computes(model) and not prefers_torch(model, batch_size) else "torch"
    if backend == "numpy":
        return NumpyEngine(model, batch_size)
    return TorchEngine(model, batch_size)
