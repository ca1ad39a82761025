"""--ema: an exponential moving average of the weights, kept by torch.optim.swa_utils.

The average is a model of its own (`module`), so it is evaluated, kept as best.pt and sampled
directly, without swapping weights in and out of the model being trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def warmed_decay(decay: float, step: int) -> float:
    """The decay used after `step` completed steps.

    Warmed up as TensorFlow's ExponentialMovingAverage does with num_updates: a fixed 0.999 would
    keep the first thousand steps' average mostly the random initialisation.
    """
    return min(decay, (1 + step) / (10 + step))


class WeightAverage:
    """The moving average of a model's parameters (buffers are not averaged: the model has none)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.averaged = AveragedModel(model, use_buffers=False)
        self.restart(model)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    def restart(self, model: nn.Module) -> None:
        """Start the average afresh from `model`'s current weights."""
        self.load([p.detach() for p in model.parameters()])

    def update(self, model: nn.Module, step: int) -> None:
        """Fold in the weights after step `step` (0-based, before the step counter moves on)."""
        self.averaged.multi_avg_fn = get_ema_multi_avg_fn(warmed_decay(self.decay, step))
        self.averaged.update_parameters(model)

    def tensors(self) -> list[torch.Tensor]:
        """The averaged weights, in the model's parameter order (what a checkpoint stores)."""
        return [p.detach() for p in self.averaged.parameters()]

    def load(self, tensors: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for avg, value in zip(self.averaged.parameters(), tensors, strict=True):
                avg.copy_(value)
            self.averaged.n_averaged.fill_(1)  # from here on every update averages, none copies
