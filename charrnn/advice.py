"""What a run tells its user when it goes wrong or ends short: the cause to name and what to do.

Kept apart from the trainer so the messages can be read (and tested) as the user sees them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .config import PRESET_REFERENCE, TrainConfig, preset_of_model

if TYPE_CHECKING:
    from .train import TrainResult

# Beyond these, a divergence is blamed on the setting rather than on the learning rate.
LARGE_WEIGHT_DECAY = 0.1
LARGE_GRAD_CLIP = 100.0


def divergence_hint(cfg: TrainConfig) -> str:
    """What to change after a divergence, naming the setting that most likely caused it, not always the lr."""
    if cfg.weight_decay > LARGE_WEIGHT_DECAY:  # AdamW shrinks every weight by lr * wd per step
        return (f"--weight-decay {cfg.weight_decay:g} is far above the usual 0-{LARGE_WEIGHT_DECAY:g}; "
                "try a smaller one")
    if cfg.grad_clip > LARGE_GRAD_CLIP:
        return (f"--grad-clip {cfg.grad_clip:g} hardly clips; try the default {TrainConfig.grad_clip:g} "
                f"or a lower --lr (now {cfg.lr:g})")
    return f"try a lower --lr (now {cfg.lr:g})"


def kept_checkpoint(run_dir: Path) -> str:
    """The end of a divergence message: which checkpoint survives, if any does."""
    kept = run_dir / "best.pt"
    if kept.exists():
        return f"; the last good checkpoint is kept at {kept}"
    return "; nothing was saved (it diverged before its first evaluation)"


UNDERTRAINED_FACTOR = 1.3  # a best loss this many times what the preset normally reaches is "far above" it
BUSY_FACTOR = 0.5  # under half the preset's usual speed: something else was using the CPU


def undertrained_note(result: TrainResult) -> str | None:
    """A sentence for the summary when a run ended undertrained, saying what to do; else None.

    Undertrained: its clock ran out before the first scheduled evaluation, or its best loss is far
    above what its preset's model normally reaches (on tiny Shakespeare; see PRESET_REFERENCE).
    """
    cfg = result.train_config
    if cfg is None or result.stop_reason not in ("time_budget", "max_steps") or result.best_val_loss is None:
        return None
    rate = result.step * cfg.batch_size * cfg.seq_len / result.elapsed if result.elapsed > 0 else 0.0
    preset = preset_of_model(result.model_config) if result.model_config is not None else None
    reference = PRESET_REFERENCE.get(preset or "")
    if result.stop_reason == "time_budget" and result.step < cfg.eval_interval:
        what = (f"the time budget ran out at step {result.step}, before the first scheduled evaluation "
                f"(step {cfg.eval_interval}): the model has hardly started learning")
    elif reference and result.best_val_loss > UNDERTRAINED_FACTOR * reference["val_loss"]:
        what = (f"best val loss {result.best_val_loss:.2f} nats/char is far above the ~{reference['val_loss']:.2f} "
                f"the {preset} preset's model reaches on tiny Shakespeare: it is undertrained")
    else:
        return None
    speed = f"{rate / 1000:.1f}k chars/s"
    if reference and rate < BUSY_FACTOR * reference["chars_per_sec"]:
        speed += (f", under half the ~{reference['chars_per_sec'] / 1000:.0f}k of an idle 2-core CPU with AVX-512: "
                  "other programs were using it, or this CPU is slower")
    return (f"{what} ({result.step} step{'' if result.step == 1 else 's'} at {speed}). Give it a longer --time-budget (or --max-steps), "
            f"train on a quieter machine, or continue it with --resume {result.run_dir} --time-budget 5m")
