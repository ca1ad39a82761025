"""The network: embedding -> multi-layer LSTM/GRU/RNN -> dropout -> linear head.

The hidden state is an argument and a return value, never stored on the module, so the trainer
can carry it across windows and the sampler can feed it back one character at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .config import ModelConfig

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_CORES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        kwargs = {"nonlinearity": "tanh"} if config.model == "rnn" else {}
        self.rnn = _CORES[config.model](
            config.embed_dim,
            config.hidden_size,
            config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            **kwargs,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Unit-variance embeddings (PyTorch's default) learn markedly faster here than small ones
        # (measured: val 1.94 vs 2.11 nats after 300 steps of a 2x256 LSTM on tiny Shakespeare). A tied
        # embedding is also the output layer, which wants the usual fan-in scale instead.
        std = self.config.hidden_size ** -0.5 if self.config.tie_weights else 1.0
        nn.init.normal_(self.embed.weight, std=std)
        if self.config.model == "lstm":
            # Forget-gate bias 1 (gate order i, f, g, o): remember by default early in training,
            # as char-rnn and torch-rnn do. The two bias vectors add, so set one of them.
            h = self.config.hidden_size
            for layer in range(self.config.num_layers):
                getattr(self.rnn, f"bias_ih_l{layer}").data[h : 2 * h].fill_(1.0)
                getattr(self.rnn, f"bias_hh_l{layer}").data[h : 2 * h].fill_(0.0)

    def init_hidden(self, batch_size: int) -> Hidden:
        """Zero state for `batch_size` streams, on the model's device and dtype."""
        weight = self.head.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        h = weight.new_zeros(shape)
        return (h, weight.new_zeros(shape)) if self.config.model == "lstm" else h

    def forward(self, idx: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """idx (B, T) long -> logits (B, T, V) and the state after the last step."""
        x = self.embed(idx)  # (B, T, E)
        if self.training and self.config.weight_drop > 0:
            # DropConnect on the recurrent weights (Merity et al., AWD-LSTM): one mask per batch,
            # the same at every time step, so it regularises the recurrence itself -- which plain
            # dropout between layers cannot -- and the fused LSTM kernel still runs unchanged.
            dropped = {name: F.dropout(weight, self.config.weight_drop)
                       for name, weight in self.rnn.named_parameters() if name.startswith("weight_hh")}
            out, hidden = functional_call(self.rnn, dropped, (x, hidden))
        else:
            out, hidden = self.rnn(x, hidden)  # (B, T, H)
        logits = self.head(self.drop(out))  # (B, T, V)
        return logits, hidden


def detach_hidden(hidden: Hidden) -> Hidden:
    """Cut the graph at a window boundary (truncated BPTT) while keeping the values."""
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)  # type: ignore[return-value]
    return hidden.detach()
