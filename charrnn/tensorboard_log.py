"""TensorBoard logging as a listener on the trainer's events (`charrnn train --tensorboard`).

The trainer reports through a `log(event)` callback (train.py); `TensorBoardLog` is one more such
callback, so training code knows nothing about it. It writes, through `torch.utils.tensorboard`:

  train/loss_nats, train/loss_bits, train/lr, train/grad_norm, train/chars_per_sec   (each progress event)
  val/loss_nats, val/loss_bits                                                     (each evaluation)
  samples                      the evaluation samples, as text
  losses                       the run's loss-curve figure (losses.png), when training ends

Under torchrun the trainer sends events on rank 0 only, and the writer is opened at the first
event, so only rank 0 writes. A resumed run purges the events logged after the step it resumes
from, as its metrics.jsonl does. Needs the `tensorboard` extra: pip install 'charrnn[tensorboard]'.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import CharRNNError

LN2 = math.log(2.0)
INSTALL_HINT = "pip install 'charrnn[tensorboard]' (or: pip install tensorboard)"

Log = Callable[[dict[str, Any]], None]


def check_available() -> None:
    """Fail early (before any training) when torch.utils.tensorboard cannot work."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard writes through it)
    except ImportError:
        raise CharRNNError(f"--tensorboard needs the tensorboard package: {INSTALL_HINT}") from None


class TensorBoardLog:
    """A trainer log callback writing TensorBoard event files into the run folder, or, given
    `log_root`, into `log_root/<run folder name>` (so that several runs share one --logdir)."""

    def __init__(self, log_root: str | os.PathLike | None = None):
        check_available()
        self.log_root = Path(log_root) if log_root is not None else None
        self.writer: Any = None
        self.run_dir: Path | None = None

    def _open(self, event: dict[str, Any]) -> None:
        import atexit

        from torch.utils.tensorboard import SummaryWriter

        atexit.register(self.close)  # a run that fails still leaves its events readable
        self.run_dir = Path(event["run_dir"])
        log_dir = self.run_dir if self.log_root is None else self.log_root / self.run_dir.name
        # Resumed at step N: what was logged after N was lost with the checkpoint (and is logged again).
        resumed_at = event.get("resumed_at") or 0
        self.writer = SummaryWriter(str(log_dir), purge_step=resumed_at + 1 if resumed_at else None)
        model, train = event["model_config"], event["train_config"]
        summary = (f"{model['num_layers']}x{model['hidden_size']} {model['model'].upper()}, "
                   f"{event['params']:,} parameters, vocabulary {event['vocab_size']}, "
                   f"batch {train['batch_size']} x seq {train['seq_len']}, lr {train['lr']:g}")
        self.writer.add_text("run", summary, resumed_at)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self._open(event)
            return
        if self.writer is None:
            return
        w, step = self.writer, event.get("step", 0)
        if kind == "step":
            loss = event["train_loss"]
            w.add_scalar("train/loss_nats", loss, step)
            w.add_scalar("train/loss_bits", loss / LN2, step)
            w.add_scalar("train/lr", event["lr"], step)
            if event.get("grad_norm") is not None and math.isfinite(event["grad_norm"]):
                w.add_scalar("train/grad_norm", event["grad_norm"], step)
            w.add_scalar("train/chars_per_sec", event["chars_per_sec"], step)
        elif kind == "eval":
            w.add_scalar("val/loss_nats", event["val_loss"], step)
            w.add_scalar("val/loss_bits", event["val_bits"], step)
            if event.get("sample"):
                w.add_text("samples", _as_markdown(event["sample"]), step)
            w.flush()  # an evaluation is where someone looks: make it visible now
        elif kind == "sample":
            w.add_text("samples", _as_markdown(event["sample"]), step)
        elif kind == "end":
            self._add_loss_figure(step)
            self.close()

    def _add_loss_figure(self, step: int) -> None:
        path = self.run_dir / "losses.png" if self.run_dir is not None else None
        if path is None or not path.is_file():
            return
        try:
            import matplotlib.image

            image = matplotlib.image.imread(str(path))[..., :3]  # RGBA floats in [0, 1] -> RGB
            self.writer.add_image("losses", image, step, dataformats="HWC")
        except Exception:  # the figure is a convenience: the scalars hold the same curves
            pass

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _as_markdown(text: str) -> str:
    """TensorBoard renders text as Markdown: indent it as a code block so line breaks survive."""
    return "\n".join("    " + line for line in text.split("\n"))


def tee(*logs: Log | None) -> Log:
    """One log callback that calls each of `logs` in turn."""
    chosen = [log for log in logs if log is not None]

    def log(event: dict[str, Any]) -> None:
        for each in chosen:
            each(event)

    return log
