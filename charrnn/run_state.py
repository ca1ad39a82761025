"""A run's state as it goes into and comes out of its checkpoints: the metadata (plain data) and
the training state that makes resume exact (optimizer, RNG, data position, carried hidden state,
weight average, guards)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import checkpoint
from .errors import CharRNNError

if TYPE_CHECKING:
    from .train import Trainer


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    if isinstance(state.get("torch"), torch.Tensor):
        torch.set_rng_state(state["torch"])
    if device.type == "cuda" and isinstance(state.get("cuda"), torch.Tensor):
        torch.cuda.set_rng_state(state["cuda"], device)


def meta(trainer: Trainer) -> dict[str, Any]:
    """The checkpoint's metadata: everything needed to rebuild, describe and sample the model."""
    from . import __version__

    return {
        "format_version": checkpoint.FORMAT_VERSION,
        "charrnn_version": __version__,
        "torch_version": str(torch.__version__),
        "model_config": trainer.model_config.to_dict(),
        "train_config": trainer.cfg.to_dict(),
        "vocab": trainer.vocab.to_list(),
        "corpus": trainer.corpus,
        "precision": trainer.precision,
        "device": trainer.device.type,
        "step": trainer.step,
        "epoch": trainer.epoch_float(),
        "elapsed": trainer.clock.elapsed,
        **trainer.record.to_meta(),
        "created": trainer.created,
        "updated": now_iso(),
        **trainer.extra_meta,
    }


def mark_start(trainer: Trainer, label: str) -> None:
    """Record where a session began (the loss plot draws a line there)."""
    trainer.extra_meta["starts"] = [*trainer.extra_meta.get("starts", []),
                                    {"step": trainer.step, "time": round(trainer.clock.elapsed, 2), "label": label}]


def train_state(trainer: Trainer) -> dict[str, Any]:
    """What last.pt adds to the weights so a resume continues bit for bit."""
    dist = trainer.dist
    hidden = dist.gather_rows(trainer.hidden)  # all B streams, from every rank
    if isinstance(hidden, tuple):
        hidden = [h.detach().cpu() for h in hidden]
    elif hidden is not None:
        hidden = [hidden.detach().cpu()]
    average = trainer.average
    return {
        "optimizer": trainer.optimizer.state_dict(),
        "rng": rng_state(trainer.device),
        "step": trainer.step,
        "epoch": trainer.epoch,
        "index": trainer.index,
        "hidden": hidden,
        "ema": None if average is None else [t.cpu() for t in average.tensors()],
        **trainer.record.to_state(),
        **dist.rank_states(rng_state(trainer.device)),
    }


def restore(trainer: Trainer, ckpt: checkpoint.Checkpoint) -> None:
    """Continue a run exactly: weights, optimizer, RNG, data position, carried state, history."""
    state = ckpt.train_state
    if state is None:
        raise CharRNNError(f"{ckpt.path} has no training state to resume from")
    if ckpt.vocab != trainer.vocab:
        raise CharRNNError(f"the corpus's vocabulary ({len(trainer.vocab)} chars) does not match the "
                           f"checkpoint's ({len(ckpt.vocab)} chars); resume needs the same text")
    trainer.model.load_state_dict(ckpt.model.state_dict())
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CharRNNError(f"{ckpt.path}: optimizer state does not fit the model ({exc})") from None
    meta = ckpt.meta
    trainer.step = int(state["step"])
    trainer.epoch = int(state["epoch"])
    trainer.index = int(state["index"])
    hidden = state.get("hidden")
    # A different batch size lays the text out differently: then the state starts afresh.
    if hidden and hidden[0].shape[1] == trainer.cfg.batch_size:
        tensors = [trainer.dist.local_rows(h).to(trainer.device) for h in hidden]  # this rank's streams
        trainer.hidden = tuple(tensors) if trainer.model_config.model == "lstm" else tensors[0]
    if trainer.average is not None:  # a run that had no average starts it from the current weights
        saved = state.get("ema")
        if saved is not None:
            trainer.average.load([t.to(trainer.device) for t in saved])
        else:
            trainer.average.restart(trainer.model)
    trainer.record.restore(meta, state)
    trainer.clock.elapsed = float(meta.get("elapsed", 0.0))
    trainer.created = meta.get("created", trainer.created)
    starts = meta.get("starts")  # where earlier sessions began (the loss plot marks them); plain data
    if isinstance(starts, list):
        trainer.extra_meta["starts"] = [s for s in starts if isinstance(s, dict) and _is_number(s.get("step"))
                                        and _is_number(s.get("time")) and isinstance(s.get("label"), str)]
    # What a run listing shows about its past (charrnn.runs): kept across resumes.
    trainer.extra_meta["resumed_at"] = [*(meta.get("resumed_at") or []), trainer.step]
    if meta.get("init_from") is not None:
        trainer.extra_meta["init_from"] = meta["init_from"]
    if meta.get("corpus", {}).get("sha256") not in (None, trainer.corpus["sha256"]):
        trainer.log({"event": "warning", "message": "the corpus changed since this run was saved; "
                     "continuing at the same position in the new text"})
    set_rng_state(trainer.dist.rng_state_for_me(state), trainer.device)


def remove_if_nothing_saved(run_dir: Path, created: bool) -> None:
    """A run that failed before its first save leaves nothing behind: its per-step logs go, and the
    folder too if this run created it (so the name is free for the next run)."""
    if any((run_dir / name).exists() for name in (checkpoint.BEST, checkpoint.LAST)):
        return
    with contextlib.suppress(OSError):
        for name in ("metrics.jsonl", "samples.jsonl", "config.toml"):
            (run_dir / name).unlink(missing_ok=True)
        checkpoint.remove_stale_temp_files(run_dir)
        if created:
            run_dir.rmdir()  # only if empty: never remove what someone else put there
