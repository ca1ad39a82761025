"""What a run has learned so far: its evaluations, the best one, patience, and the divergence guard.

The trainer asks this record two questions — is this training loss a divergence, and did this
validation loss improve — and run_state saves it in the checkpoint so a resume continues it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import checkpoint
from .advice import divergence_hint, kept_checkpoint
from .config import TrainConfig
from .errors import CharRNNError

EXPLODE_FACTOR = 3.0  # char-rnn's guard: a loss this many times the first one means divergence
HISTORY_KEYS = ("step", "epoch", "time", "train_loss", "val_loss", "lr")


class EvalRecord:
    """The loss history (one row per evaluation), the best validation loss and the patience count."""

    def __init__(self) -> None:
        self.history: dict[str, list[Any]] = {key: [] for key in HISTORY_KEYS}
        self.best_val_loss: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0  # evaluations since the best one: --patience counts these
        self.first_loss: float | None = None  # the divergence guard's yardstick

    def check_training_loss(self, loss: float, step: int, cfg: TrainConfig, run_dir: Path) -> None:
        """Raise the one-line divergence error on a non-finite or exploded training loss."""
        if self.first_loss is None:
            self.first_loss = loss
        bad = not math.isfinite(loss)
        if bad or loss > EXPLODE_FACTOR * self.first_loss:
            what = f"became {loss}" if bad else f"exploded to {loss:.3f} (first loss {self.first_loss:.3f})"
            raise CharRNNError(f"training loss {what} at step {step}; {divergence_hint(cfg)}{kept_checkpoint(run_dir)}")

    @staticmethod
    def check_validation_loss(val_loss: float, step: int, cfg: TrainConfig, run_dir: Path) -> None:
        if not math.isfinite(val_loss):  # the last update broke the weights: never save them
            raise CharRNNError(f"validation loss became {val_loss} at step {step}; "
                               f"{divergence_hint(cfg)}{kept_checkpoint(run_dir)}")

    def add(self, *, step: int, epoch: float, elapsed: float, train_loss: float | None, val_loss: float,
            lr: float) -> bool:
        """Record one evaluation; True if it is the best so far (then best.pt is to be written)."""
        for key, value in (("step", step), ("epoch", round(epoch, 4)), ("time", round(elapsed, 2)),
                           ("train_loss", checkpoint.finite_or_none(train_loss)),
                           ("val_loss", checkpoint.finite_or_none(val_loss)), ("lr", lr)):
            self.history[key].append(value)
        improved = self.best_val_loss is None or val_loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_step, self.bad_evals = val_loss, step, 0
        else:
            self.bad_evals += 1
        return improved

    def patience_out(self, patience: int | None) -> bool:
        return patience is not None and self.bad_evals >= patience

    def evaluated_at(self, step: int) -> bool:
        return bool(self.history["step"]) and self.history["step"][-1] == step

    # ----- what a checkpoint keeps ------------------------------------------------------------
    def to_meta(self) -> dict[str, Any]:
        return {"best_val_loss": self.best_val_loss, "best_step": self.best_step, "history": self.history}

    def to_state(self) -> dict[str, Any]:
        return {"bad_evals": self.bad_evals, "first_loss": self.first_loss}

    def restore(self, meta: dict[str, Any], state: dict[str, Any]) -> None:
        self.bad_evals = int(state.get("bad_evals", 0))
        self.first_loss = state.get("first_loss")
        self.history = {k: list(v) for k, v in meta.get("history", self.history).items()}
        self.best_val_loss = meta.get("best_val_loss")
        self.best_step = meta.get("best_step")
