"""Truncated-BPTT training: stateful windows, Adam, clipping, schedules, evaluation, checkpoints.

The library never prints: progress goes to an optional `log(event)` callback (dicts), and the
per-step log goes to `metrics.jsonl` in the run folder.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint
from .config import PRESET_REFERENCE, ModelConfig, TrainConfig, preset_of_model
from .corpus_cache import CorpusSource, as_source
from .data import StreamBatcher, sizes_that_fit, stream_rows, to_long
from .distributed import Distributed
from .errors import CharRNNError
from .model import CharRNN, Hidden, detach_hidden
from .plots import LossCurve, load_pyplot, plot_losses
from .runtime import autocast, derived_seed, release_free_memory, resolve_precision, seed_everything
from .vocab import Vocab

LOG2E = 1.0 / math.log(2.0)
EXPLODE_FACTOR = 3.0  # char-rnn's guard: a loss this many times the first one means divergence
# Beyond these, a divergence is blamed on the setting rather than on the learning rate.
LARGE_WEIGHT_DECAY = 0.1
LARGE_GRAD_CLIP = 100.0
# The final evaluation's cost is estimated from a probe of this many validation columns (see
# Trainer._estimate_eval_cost), plus the checkpoint writes and the plot.
EVAL_PROBE_COLUMNS = 256  # one chunk of `evaluate`: representative, and cheap however big validation is
EVAL_MARGIN = 1.1  # the machine's load varies between the probe and the real thing; overshooting is worse
SAVE_ALLOWANCE = 0.25  # seconds: meta.json, a sample, the fsyncs
SAVE_BYTES_PER_SEC = 50e6

Log = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    run_dir: Path
    best_val_loss: float | None
    best_step: int | None
    step: int
    elapsed: float
    stop_reason: str
    history: dict[str, list]
    train_config: TrainConfig | None = None
    model_config: ModelConfig | None = None

    @property
    def best_val_bits(self) -> float | None:
        return None if self.best_val_loss is None else self.best_val_loss * LOG2E


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
        speed += (f", under half the ~{reference['chars_per_sec'] / 1000:.0f}k of an idle 2-core CPU: other "
                  "programs were using it")
    return (f"{what} ({result.step} step{'' if result.step == 1 else 's'} at {speed}). Give it a longer --time-budget (or --max-steps), "
            f"train on a quieter machine, or continue it with --resume {result.run_dir} --time-budget 5m")


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to lr*min_lr_frac as `progress` goes 0 -> 1."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_frac + (1.0 - cfg.min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * p)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@torch.no_grad()
def evaluate(model: CharRNN, streams: np.ndarray | torch.Tensor, device: torch.device, precision: str = "fp32",
             chunk: int = 256) -> float:
    """Mean cross-entropy (nats/char) over all streams, state carried from each stream's start.

    Every character is scored with its whole preceding stream as context, as in sampling.
    """
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    hidden: Hidden | None = None
    length = streams.shape[1]
    try:
        for start in range(0, length - 1, chunk):
            window = to_long(streams[:, start : min(start + chunk + 1, length)]).to(device, non_blocking=True)
            x, y = window[:, :-1], window[:, 1:]
            with autocast(device, precision):
                logits, hidden = model(x, hidden)
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                     reduction="sum").double()
            count += y.numel()
    finally:
        model.train(was_training)
    return float(total) / count


def val_streams(val_ids: np.ndarray, seq_len: int, max_streams: int = 64) -> np.ndarray:
    """Validation laid out as contiguous streams (fewer streams = more context per character); a view."""
    n = len(val_ids)
    if n < 2:
        raise CharRNNError("validation split has fewer than 2 characters; use a longer text or a larger --val-frac")
    streams = max(1, min(max_streams, (n - 1) // max(seq_len, 1)))
    return stream_rows(val_ids, streams)


# Validation fractions a hint may suggest when the split leaves too little on one side.
_HINT_VAL_FRACS = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5)


def check_split(n_train: int, n_val: int, cfg: TrainConfig,
                split_sizes: Callable[[float], tuple[int, int]] | None = None) -> None:
    """Refuse a split that cannot train or cannot be evaluated, naming the real cause, with a hint
    whose every suggestion trains: the sizes suggested leave room for the validation split too.

    `n_train`/`n_val` are the characters on each side of the split (one batch needs B x (T+1)
    training characters; evaluation needs 2 validation characters); `split_sizes(val_frac)` gives
    them for another fraction (default: the joined text cut once, as `data.split` does).
    """
    need = cfg.batch_size * (cfg.seq_len + 1)
    if n_train >= need and n_val >= 2:
        return
    total = n_train + n_val

    def sides(frac: float) -> tuple[int, int]:
        if split_sizes is not None:
            return split_sizes(frac)
        kept = int(total * (1.0 - frac))  # as data.split cuts the text
        return kept, total - kept

    # An unusually large --val-frac that starves training is the cause to name, not the text's length.
    blame_frac = n_train < need and cfg.val_frac > max(_HINT_VAL_FRACS)
    fracs = ([] if blame_frac else [cfg.val_frac]) + [f for f in _HINT_VAL_FRACS if f != cfg.val_frac]
    usable = [f for f in fracs if sides(f)[0] >= 2 and sides(f)[1] >= 2]
    frac = usable[0] if usable else None
    if frac is None:
        options: list[str] = []
    else:
        prefix = "" if frac == cfg.val_frac else f"--val-frac {frac:g} "
        options = [prefix + o for o in sizes_that_fit(sides(frac)[0], cfg.batch_size, cfg.seq_len)] or [prefix.strip()]
    hint = ("try " + " or ".join(options) + ("" if blame_frac else ", or a longer text")) if options else "use a longer text"
    if blame_frac:
        raise CharRNNError(f"--val-frac {cfg.val_frac:g} leaves {n_train:,} of the text's {total:,} characters "
                           f"for training, too few for one batch of {cfg.batch_size} x {cfg.seq_len + 1}; {hint}")
    if n_val < 2:
        raise CharRNNError(f"the validation split (--val-frac {cfg.val_frac:g} of {total:,} characters) holds "
                           f"{n_val} character{'s' if n_val != 1 else ''}, and evaluating needs at least 2; {hint}")
    raise CharRNNError(f"training text has {n_train:,} characters, too few for one batch of "
                       f"{cfg.batch_size} x {cfg.seq_len + 1}; {hint}")


def _available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on `device`, or None where we cannot tell."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
            return (int(info["MemAvailable"].split()[0]) + int(info.get("SwapFree", "0 kB").split()[0])) * 1024
        except (OSError, KeyError, ValueError):
            return None
    return None


def check_fits_in_memory(model_config: ModelConfig, cfg: TrainConfig, device: torch.device) -> None:
    """Refuse a model that cannot fit before allocating it.

    An absurd --hidden-size would otherwise end in an allocator traceback or, worse, the OOM killer.
    Counted: fp32 weights, gradients and two Adam moments, plus the logits of one batch and their
    gradient; a lower bound, so nothing that fits is refused.
    """
    params = model_config.num_parameters()
    need = 16 * params + 8 * cfg.batch_size * cfg.seq_len * model_config.vocab_size
    available = _available_memory(device)
    if available is not None and need > available:
        raise CharRNNError(
            f"a {params / 1e6:,.0f}M-parameter model with batch {cfg.batch_size} x {cfg.seq_len} needs at least "
            f"{need / 2**30:,.1f} GiB to train, but {device.type} has {available / 2**30:,.1f} GiB free; "
            "use a smaller --hidden-size, --num-layers, --embed-dim, --batch-size or --seq-len")


class _StopFlag:
    """Turns SIGINT/SIGTERM into 'stop at the next step boundary' (main thread only)."""

    def __init__(self) -> None:
        self.signal: str | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {}

        def handler(signum: int, frame: Any) -> None:
            if self.signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C means "now"
            self.signal = signal.Signals(signum).name

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


class _MetricsLog:
    """The per-step log, appended as training goes. A failed write (disk full, file too large)
    stops training with the file named; the checkpoints are untouched and rows after the last
    one are dropped on resume anyway."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "a", encoding="utf-8")

    def _failed(self, exc: OSError) -> CharRNNError:
        return CharRNNError(f"could not write {self.path}: {exc.strerror or exc}; the checkpoints are unchanged, "
                            "so --resume continues once there is room")

    def write(self, row: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as exc:
            raise self._failed(exc) from None

    def close(self, quietly: bool = False) -> None:
        try:
            self.file.close()
        except OSError as exc:
            if not quietly:
                raise self._failed(exc) from None


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    if isinstance(state.get("torch"), torch.Tensor):
        torch.set_rng_state(state["torch"])
    if device.type == "cuda" and isinstance(state.get("cuda"), torch.Tensor):
        torch.cuda.set_rng_state(state["cuda"], device)


class Trainer:
    """One training run in one run folder. `run()` trains until a limit, a signal or early stop."""

    def __init__(self, text: str | CorpusSource, run_dir: str | os.PathLike, model_config: ModelConfig,
                 train_config: TrainConfig, *, vocab: Vocab | None = None,
                 corpus: dict[str, Any] | None = None, log: Log | None = None):
        """`text` is a string, or any corpus_cache source (CorpusFiles, EncodedCorpus) for big corpora."""
        self.run_dir = Path(run_dir)
        self.cfg = train_config
        self.dist = Distributed.from_env(train_config.device)  # a torchrun job, or just this process
        self.log = (log or (lambda event: None)) if self.dist.is_main else (lambda event: None)
        self.device = self.dist.device
        self.precision = resolve_precision(train_config.precision, self.device)
        source = as_source(text)
        self.vocab = vocab or Vocab.from_text(source.chars())
        unknown = self.vocab.unknown(source.chars())
        if unknown:
            raise CharRNNError(f"the corpus has characters the vocabulary lacks: {unknown[:10]}")
        if len(self.vocab) != model_config.vocab_size:
            model_config = ModelConfig.from_dict({**model_config.to_dict(), "vocab_size": len(self.vocab)})
        self.model_config = model_config
        data = source.load(self.vocab, train_config.val_frac)  # compact ids; memory-mapped for CorpusFiles
        self.corpus = {**(corpus or {}), **data.info}
        check_split(len(data.train_ids), len(data.val_ids), train_config, getattr(source, "split_sizes", None))
        # Under torchrun each rank trains its own rows of the global batch (distributed.py).
        self.batcher = self.dist.shard(StreamBatcher.from_ids(data.train_ids, train_config.batch_size,
                                                              train_config.seq_len, train_config.seed))
        self.val = val_streams(data.val_ids, train_config.seq_len)
        self.dist.check_same([str(self.run_dir.resolve()), self.corpus.get("sha256"), len(self.vocab)],
                             "run folder or corpus")

        check_fits_in_memory(model_config, train_config, self.device)
        seed_everything(train_config.seed)
        self.model = CharRNN(model_config).to(self.device)
        self.train_model = self.dist.wrap(self.model, train_config.seed)  # DDP under torchrun
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train_config.lr,
                                           weight_decay=train_config.weight_decay)
        self.params = list(self.model.parameters())
        # The moving average of the weights (--ema): what is evaluated, kept as best and sampled.
        self.ema: list[torch.Tensor] | None = None
        self.restart_average()
        self.step = 0
        self.epoch = 0
        self.index = 0  # next window within the epoch
        self.hidden: Hidden | None = None
        self.elapsed = 0.0  # seconds of wall clock spent in this run, over all sessions
        self.history: dict[str, list] = {"step": [], "epoch": [], "time": [], "train_loss": [], "val_loss": [], "lr": []}
        self.best_val_loss: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.first_loss: float | None = None
        self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.extra_meta: dict[str, Any] = {}
        self.curve = LossCurve()  # the per-step loss for the plot, bounded however long the run
        self.restored = False  # True once `restore` continued a saved run
        self.time_added: float | None = None  # on a resume, the seconds a new time budget gave

    def restart_average(self) -> None:
        """Start the moving average (--ema) from the current weights."""
        self.ema = [p.detach().clone() for p in self.params] if self.cfg.ema else None

    # ----- bookkeeping -------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        from . import __version__

        return {
            "format_version": checkpoint.FORMAT_VERSION,
            "charrnn_version": __version__,
            "torch_version": str(torch.__version__),
            "model_config": self.model_config.to_dict(),
            "train_config": self.cfg.to_dict(),
            "vocab": self.vocab.to_list(),
            "corpus": self.corpus,
            "precision": self.precision,
            "device": self.device.type,
            "step": self.step,
            "epoch": self.epoch + self.index / self.batcher.windows_per_epoch,
            "elapsed": self.elapsed,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "history": self.history,
            "created": self.created,
            "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **self.extra_meta,
        }

    def train_state(self) -> dict[str, Any]:
        hidden = self.dist.gather_rows(self.hidden)  # all B streams, from every rank
        if isinstance(hidden, tuple):
            hidden = [h.detach().cpu() for h in hidden]
        elif hidden is not None:
            hidden = [hidden.detach().cpu()]
        return {
            "optimizer": self.optimizer.state_dict(),
            "rng": _rng_state(self.device),
            "step": self.step,
            "epoch": self.epoch,
            "index": self.index,
            "hidden": hidden,
            "ema": None if self.ema is None else [t.detach().cpu() for t in self.ema],
            "bad_evals": self.bad_evals,
            "first_loss": self.first_loss,
            **self.dist.rank_states(_rng_state(self.device)),
        }

    def save_last(self) -> None:
        state = self.train_state()  # under torchrun this gathers from every rank: all ranks call it
        self.extra_meta.update(self.dist.describe(self.model))
        if self.dist.is_main:
            checkpoint.save(self.run_dir / checkpoint.LAST, self.model, self.meta(), state)
            checkpoint.write_meta(self.run_dir, self.meta())

    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        """Continue a run exactly: weights, optimizer, RNG, data position, carried state, history."""
        state = ckpt.train_state
        if state is None:
            raise CharRNNError(f"{ckpt.path} has no training state to resume from")
        if ckpt.vocab != self.vocab:
            raise CharRNNError(f"the corpus's vocabulary ({len(self.vocab)} chars) does not match the "
                               f"checkpoint's ({len(ckpt.vocab)} chars); resume needs the same text")
        self.model.load_state_dict(ckpt.model.state_dict())
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError, TypeError) as exc:
            raise CharRNNError(f"{ckpt.path}: optimizer state does not fit the model ({exc})") from None
        meta = ckpt.meta
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])
        hidden = state.get("hidden")
        # A different batch size lays the text out differently: then the state starts afresh.
        if hidden and hidden[0].shape[1] == self.cfg.batch_size:
            tensors = [self.dist.local_rows(h).to(self.device) for h in hidden]  # this rank's streams
            self.hidden = tuple(tensors) if self.model_config.model == "lstm" else tensors[0]
        if self.ema is not None:  # a run that had no average starts it from the current weights
            saved = state.get("ema")
            source = saved if saved is not None else self.params
            with torch.no_grad():
                for avg, value in zip(self.ema, source, strict=True):
                    avg.copy_(value)
        self.bad_evals = int(state.get("bad_evals", 0))
        self.first_loss = state.get("first_loss")
        self.elapsed = float(meta.get("elapsed", 0.0))
        self.history = {k: list(v) for k, v in meta.get("history", self.history).items()}
        self.best_val_loss = meta.get("best_val_loss")
        self.best_step = meta.get("best_step")
        self.created = meta.get("created", self.created)
        starts = meta.get("starts")  # where earlier sessions began (the loss plot marks them); plain data
        if isinstance(starts, list):
            self.extra_meta["starts"] = [s for s in starts if isinstance(s, dict) and _is_number(s.get("step"))
                                         and _is_number(s.get("time")) and isinstance(s.get("label"), str)]
        if meta.get("corpus", {}).get("sha256") not in (None, self.corpus["sha256"]):
            self.log({"event": "warning", "message": "the corpus changed since this run was saved; "
                      "continuing at the same position in the new text"})
        _set_rng_state(self.dist.rng_state_for_me(state), self.device)
        self.restored = True
        if self.dist.is_main:
            self._truncate_metrics(self.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric rows logged after the checkpoint we resume from (they were lost with it),
        and rebuild the plot's loss curve from the rows kept, in the same pass."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                    if row.get("step", 0) <= step:
                        keep.append(line)
                        self.curve.add(float(row["step"]), float(row["time"]), float(row["loss"]))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                    continue  # a line torn by a kill
        checkpoint.atomic_write(path, lambda f: f.writelines(keep), mode="w")

    # ----- the loop ----------------------------------------------------------------------------
    def progress(self) -> float:
        """How far through the lr schedule: by steps, by time, whichever is further."""
        if self.cfg.decay_steps:
            return self.step / self.cfg.decay_steps
        parts = []
        if self.cfg.max_steps:
            parts.append(self.step / self.cfg.max_steps)
        if self.cfg.time_budget:
            parts.append(self.elapsed / self.cfg.time_budget)
        return max(parts) if parts else 0.0

    def train_step(self) -> float:
        cfg = self.cfg
        if self.index >= self.batcher.windows_per_epoch:
            self.epoch += 1
            self.index = 0
            self.hidden = None  # a new epoch starts at a new offset: the old state does not fit
        x, y = self.batcher.window(self.epoch, self.index)
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        lr = lr_at(cfg, self.step, self.progress())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.precision):
            logits, hidden = self.train_model(x, self.hidden if cfg.stateful else None)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            # Warm the decay up (as TensorFlow's ExponentialMovingAverage does with num_updates), or
            # the first thousand steps' average would still be mostly the random initialisation.
            decay = min(cfg.ema, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1.0 - decay)
        self.hidden = self._reset_some_rows(detach_hidden(hidden)) if cfg.stateful else None
        self.step += 1
        self.index += 1
        self._lr = lr
        self._grad_norm = grad_norm
        return self.dist.mean(loss.item())  # under torchrun: the whole global batch's loss

    def _reset_some_rows(self, hidden: Hidden) -> Hidden:
        """Restart a random few streams from the zero state.

        With the state always carried, the model almost never sees a zero state after the first
        window of an epoch, and then writes nonsense for the first characters after a short prime
        (the state a sample starts from). A few fresh starts per step teach it that case too.
        """
        if not self.cfg.state_reset_prob:
            return hidden
        # Drawn for the whole global batch from (seed, step), not from the global RNG: every rank of a
        # torchrun job and every resume draws the same resets, so N processes compute what one does.
        gen = torch.Generator().manual_seed(derived_seed(self.cfg.seed, self.step))
        keep = torch.rand(self.cfg.batch_size, generator=gen) >= self.cfg.state_reset_prob
        keep = keep[self.dist.rows(self.cfg.batch_size)].to(self.device).view(1, -1, 1)
        if isinstance(hidden, tuple):
            return tuple(h * keep.to(h.dtype) for h in hidden)  # type: ignore[return-value]
        return hidden * keep.to(hidden.dtype)

    def _check_loss(self, loss: float) -> None:
        if self.first_loss is None:
            self.first_loss = loss
        bad = not math.isfinite(loss)
        if bad or loss > EXPLODE_FACTOR * self.first_loss:
            where = self._kept_checkpoint()
            what = f"became {loss}" if bad else f"exploded to {loss:.3f} (first loss {self.first_loss:.3f})"
            raise CharRNNError(f"training loss {what} at step {self.step}; {self._divergence_hint()}{where}")

    def _divergence_hint(self) -> str:
        """What to change, naming the setting that most likely caused it, not always the lr."""
        cfg = self.cfg
        if cfg.weight_decay > LARGE_WEIGHT_DECAY:  # AdamW shrinks every weight by lr * wd per step
            return (f"--weight-decay {cfg.weight_decay:g} is far above the usual 0-{LARGE_WEIGHT_DECAY:g}; "
                    "try a smaller one")
        if cfg.grad_clip > LARGE_GRAD_CLIP:
            return (f"--grad-clip {cfg.grad_clip:g} hardly clips; try the default {TrainConfig.grad_clip:g} "
                    f"or a lower --lr (now {cfg.lr:g})")
        return f"try a lower --lr (now {cfg.lr:g})"

    def _kept_checkpoint(self) -> str:
        """The end of a divergence message: which checkpoint survives, if any does."""
        kept = self.run_dir / checkpoint.BEST
        if kept.exists():
            return f"; the last good checkpoint is kept at {kept}"
        return "; nothing was saved (it diverged before its first evaluation)"

    def _sample_text(self) -> str:
        from .sample import generate

        try:
            return generate(self.model, self.vocab, self.cfg.sample_length, temperature=0.8, seed=self.cfg.seed)
        finally:
            self.model.train()

    @contextlib.contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """With --ema, the model holds the averaged weights inside this block, its own after."""
        if self.ema is None:
            yield
            return
        own = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_([p.detach() for p in self.params], self.ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.detach() for p in self.params], own)

    def _evaluate_and_save(self, train_loss: float | None) -> bool:
        """Full validation pass; keep the best checkpoint. Returns True if patience ran out."""
        with self._averaged_weights():  # with --ema, the average is what is scored, kept and sampled
            val_loss = self.dist.evaluate(evaluate, self.model, self.val, self.device, self.precision)
            if not math.isfinite(val_loss):  # the last update broke the weights: never save them
                where = self._kept_checkpoint()
                raise CharRNNError(f"validation loss became {val_loss} at step {self.step}; "
                                   f"{self._divergence_hint()}{where}")
            h = self.history
            h["step"].append(self.step)
            h["epoch"].append(round(self.epoch + self.index / self.batcher.windows_per_epoch, 4))
            h["time"].append(round(self.elapsed, 2))
            h["train_loss"].append(checkpoint.finite_or_none(train_loss))
            h["val_loss"].append(checkpoint.finite_or_none(val_loss))
            h["lr"].append(self._lr if hasattr(self, "_lr") else self.cfg.lr)
            improved = self.best_val_loss is None or val_loss < self.best_val_loss
            if improved:
                self.best_val_loss, self.best_step, self.bad_evals = val_loss, self.step, 0
                if self.dist.is_main:
                    checkpoint.save(self.run_dir / checkpoint.BEST, self.model, self.meta())
            else:
                self.bad_evals += 1
            sample = self._sample_text() if self.cfg.sample_length and self.cfg.sample_interval == 0 else None
        self.save_last()  # the training weights (the average rides in its training state)
        event = {"event": "eval", "step": self.step, "val_loss": val_loss, "val_bits": val_loss * LOG2E,
                 "train_loss": train_loss, "best_val_loss": self.best_val_loss, "improved": improved}
        if sample is not None:
            event["sample"] = sample
        self.log(event)
        self._plot()
        release_free_memory()
        return self.cfg.patience is not None and self.bad_evals >= self.cfg.patience

    def _plot(self) -> None:
        if not self.dist.is_main:
            return
        try:
            starts = [(s["step"], s["time"], s["label"]) for s in self.extra_meta.get("starts", [])]
            plot_losses(self.history, self.run_dir / "losses.png", metrics=self.curve,
                        title=self.run_dir.resolve().name, starts=starts)
        except Exception as exc:  # a plot must never stop training
            self.log({"event": "warning", "message": f"could not draw the loss plot: {exc}"})

    def run(self) -> TrainResult:
        resumed_at = self.step if self.restored else None
        if resumed_at is not None:  # marked on the loss plot
            self.extra_meta["starts"] = [*self.extra_meta.get("starts", []),
                                         {"step": self.step, "time": round(self.elapsed, 2), "label": "resumed"}]
        created = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CharRNNError(f"cannot create run folder {self.run_dir}: {exc.strerror or exc}") from None
        if self.dist.is_main:  # the one writer; another rank would delete rank 0's writes in flight
            checkpoint.remove_stale_temp_files(self.run_dir)  # half-written files of a killed run
        try:
            return self._run(resumed_at)
        except BaseException:
            if self.dist.is_main:
                self._remove_if_nothing_saved(created)
            raise

    def _remove_if_nothing_saved(self, created: bool) -> None:
        """A run that failed before its first save leaves nothing behind: its per-step log goes, and
        the folder too if this run created it (so the name is free for the next run)."""
        if any((self.run_dir / name).exists() for name in (checkpoint.BEST, checkpoint.LAST)):
            return
        with contextlib.suppress(OSError):
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
            checkpoint.remove_stale_temp_files(self.run_dir)
            if created:
                self.run_dir.rmdir()  # only if empty: never remove what someone else put there

    def _estimate_eval_cost(self) -> float:
        """Seconds the final evaluation and save will take, before one has run (afterwards the last
        one's measured cost is used). Times the validation pass over its first columns and scales
        up, plus the writes; without this a run that ends before its first evaluation overshoots
        its budget by a whole validation pass."""
        columns = self.val.shape[1] - 1  # characters scored per stream
        probe = min(columns, EVAL_PROBE_COLUMNS)
        t = time.perf_counter()
        self.dist.evaluate(evaluate, self.model, self.val[:, : probe + 1], self.device, self.precision)
        scored = (time.perf_counter() - t) * columns / max(probe, 1)
        if self.dist.is_main:
            load_pyplot()  # once per process, on the clock but not part of every plot's cost
        t = time.perf_counter()
        if self.dist.is_main:  # the plot, drawn but not written
            with contextlib.suppress(Exception):
                plot_losses(self.history, None, metrics=self.curve)
        release_free_memory()  # as after every evaluation
        drawn = time.perf_counter() - t
        weights_bytes = 4 * sum(p.numel() for p in self.params) * (4 if self.ema is None else 5)  # + Adam moments
        return EVAL_MARGIN * (scored + drawn) + SAVE_ALLOWANCE + weights_bytes / SAVE_BYTES_PER_SEC

    def _run(self, resumed_at: int | None) -> TrainResult:
        cfg = self.cfg
        self.model.train()
        stop = _StopFlag()
        start_elapsed = self.elapsed
        t0 = time.perf_counter()
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            last_eval_cost = 0.0  # done already: nothing to estimate
        elif cfg.time_budget is not None and self.elapsed < cfg.time_budget:
            last_eval_cost = self._estimate_eval_cost()
        else:
            last_eval_cost = 0.0
        step_cost = 0.0  # the last step's seconds: the budget must hold one more step and the evaluation
        recent: list[float] = []
        chars_per_step = cfg.batch_size * cfg.seq_len
        log_t, log_step = time.perf_counter(), self.step
        reason = "max_steps"
        metrics = _MetricsLog(self.run_dir / "metrics.jsonl" if self.dist.is_main else Path(os.devnull))
        self.log({"event": "start", "run_dir": str(self.run_dir), "device": str(self.device),
                  "precision": self.precision, "params": sum(p.numel() for p in self.model.parameters()),
                  "model_config": self.model_config.to_dict(), "train_config": cfg.to_dict(),
                  "vocab_size": len(self.vocab), "windows_per_epoch": self.batcher.windows_per_epoch,
                  "resumed_at": self.step, "resumed": self.restored, "elapsed": self.elapsed,
                  "world_size": self.dist.world_size})
        try:
            with stop.installed():
                while True:
                    if cfg.max_steps is not None and self.step >= cfg.max_steps:
                        reason = "max_steps"
                        break
                    # Under torchrun all processes agree on the clock (it drives the schedule and the
                    # budget) and on signals, so every rank decides the same at the same step.
                    self.elapsed, reserve, stop.signal = self.dist.agree(self.elapsed, last_eval_cost + step_cost,
                                                                         stop.signal)
                    # Stop early enough that the next step and the final evaluation still fit in the budget.
                    if cfg.time_budget is not None and self.elapsed + reserve >= cfg.time_budget:
                        reason = "time_budget"
                        break
                    if stop.signal:
                        reason = stop.signal
                        self.log({"event": "stopping", "signal": stop.signal, "step": self.step})
                        break
                    s0 = time.perf_counter()
                    loss = self.train_step()
                    self.elapsed = start_elapsed + time.perf_counter() - t0
                    step_cost = time.perf_counter() - s0
                    self._check_loss(loss)
                    recent.append(loss)
                    metrics.write({"step": self.step, "loss": round(loss, 5), "lr": self._lr,
                                   "time": round(self.elapsed, 3)})
                    self.curve.add(self.step, self.elapsed, loss)
                    if self.step % cfg.log_interval == 0:
                        now = time.perf_counter()
                        rate = (self.step - log_step) * chars_per_step / max(now - log_t, 1e-9)
                        log_t, log_step = now, self.step
                        self.log({"event": "step", "step": self.step, "epoch": self.epoch + self.index / self.batcher.windows_per_epoch,
                                  "train_loss": sum(recent[-cfg.log_interval:]) / len(recent[-cfg.log_interval:]),
                                  "lr": self._lr, "chars_per_sec": rate, "elapsed": self.elapsed,
                                  "time_left": self._time_left(rate), "best_val_loss": self.best_val_loss,
                                  "done_frac": self._done_frac(),
                                  "grad_norm": float(self._grad_norm)})
                    if cfg.sample_interval and cfg.sample_length and self.step % cfg.sample_interval == 0:
                        with self._averaged_weights():
                            self.log({"event": "sample", "step": self.step, "sample": self._sample_text()})
                    if self.step % cfg.eval_interval == 0:
                        e0 = time.perf_counter()
                        metrics.flush()
                        train_loss = sum(recent) / len(recent)
                        recent.clear()
                        patience_out = self._evaluate_and_save(train_loss)
                        last_eval_cost = time.perf_counter() - e0
                        self.elapsed = start_elapsed + time.perf_counter() - t0
                        if patience_out:
                            reason = "early_stop"
                            break
            if self.step == resumed_at and reason in ("max_steps", "time_budget"):
                raise CharRNNError(self._nothing_left(reason, last_eval_cost))
            if not self.history["step"] or self.history["step"][-1] != self.step:
                metrics.flush()
                self._evaluate_and_save(sum(recent) / len(recent) if recent else None)
                self.elapsed = start_elapsed + time.perf_counter() - t0
                self.save_last()
        except BaseException:
            metrics.close(quietly=True)  # the error on its way out says more than a failed last flush
            raise
        metrics.close()
        result = TrainResult(self.run_dir, self.best_val_loss, self.best_step, self.step, self.elapsed,
                             reason, self.history, cfg, self.model_config)
        self.log({"event": "end", "reason": reason, "step": self.step, "elapsed": self.elapsed,
                  "best_val_loss": self.best_val_loss, "best_step": self.best_step,
                  "best_path": str(self.run_dir / checkpoint.BEST)})
        return result

    def _nothing_left(self, reason: str, eval_cost: float) -> str:
        """A resumed run whose limits are already spent: say how to give it more."""
        if reason == "time_budget" and self.time_added is not None:
            return (f"a time budget of {self.time_added:.0f}s more is too short to train a step and evaluate "
                    f"(evaluating and saving take about {eval_cost:.0f}s); give more, e.g. --time-budget "
                    f"{max(5, math.ceil(3 * eval_cost / 60))}m")
        if reason == "max_steps":
            spent = f"its step limit ({self.cfg.max_steps})"
        elif self.elapsed < self.cfg.time_budget:  # some left, but less than the final evaluation takes
            spent = (f"the end of its time budget ({self.cfg.time_budget - self.elapsed:.0f}s left, less than "
                     f"the ~{eval_cost:.0f}s evaluating and saving take)")
        else:
            spent = f"its time budget ({self.cfg.time_budget:.0f}s, {self.elapsed:.0f}s used)"
        return (f"{self.run_dir} already reached {spent} at step {self.step}; to continue it, give a new limit: "
                f"--max-steps N (to step N > {self.step}) or --time-budget T (T more)")

    def _done_frac(self) -> float:
        """How much of the run's limit (steps or clock, whichever comes first) is used."""
        parts = [0.0]
        if self.cfg.max_steps:
            parts.append(self.step / self.cfg.max_steps)
        if self.cfg.time_budget:
            parts.append(self.elapsed / self.cfg.time_budget)
        return min(max(parts), 1.0)

    def _time_left(self, rate: float) -> float | None:
        left = []
        if self.cfg.time_budget is not None:
            left.append(max(self.cfg.time_budget - self.elapsed, 0.0))
        if self.cfg.max_steps is not None and rate > 0:
            steps = max(self.cfg.max_steps - self.step, 0)
            left.append(steps * self.cfg.batch_size * self.cfg.seq_len / rate)
        return min(left) if left else None


def train(text: str | CorpusSource, run_dir: str | os.PathLike, model_config: ModelConfig | None = None,
          train_config: TrainConfig | None = None, *, corpus: dict[str, Any] | None = None,
          log: Log | None = None) -> TrainResult:
    """Train a new model on `text` into `run_dir` (created; an existing run there is replaced).

    `text` may also be a `CorpusFiles` (files / a directory, memory-mapped) or an `EncodedCorpus`.
    """
    trainer = Trainer(text, run_dir, model_config or ModelConfig(), train_config or TrainConfig(),
                      corpus=corpus, log=log)
    metrics = Path(run_dir) / "metrics.jsonl"
    if trainer.dist.is_main and metrics.exists():
        metrics.unlink()
    return trainer.run()


def resume(text: str | CorpusSource, run_dir: str | os.PathLike, *, log: Log | None = None,
           **overrides: Any) -> TrainResult:
    """Continue the run in `run_dir` exactly where it stopped; `overrides` change train-config settings.

    Without a new limit the run continues under its own (what an interrupted run has left). A new
    limit replaces the saved ones: `max_steps=N` continues to step N, `time_budget=T` gives the
    run T more seconds; with both, whichever comes first. A run whose limits are spent says so.
    """
    ckpt = checkpoint.load(run_dir, prefer=checkpoint.LAST)
    if ckpt.path.name != checkpoint.LAST:
        raise CharRNNError(f"{run_dir} has no {checkpoint.LAST} to resume from")
    unknown = ckpt.vocab.unknown(as_source(text).chars())
    if unknown:
        raise CharRNNError(f"the corpus does not match the run's vocabulary (it adds {unknown[:10]}); "
                           "resume needs the same text; use --init-from to fine-tune on a new one")
    overrides = resumed_limits(ckpt.meta, overrides)
    cfg = TrainConfig.from_dict({**ckpt.meta["train_config"], **overrides})
    trainer = Trainer(text, run_dir, ckpt.model_config, cfg, vocab=ckpt.vocab,
                      corpus=ckpt.meta.get("corpus"), log=log)
    trainer.restore(ckpt)
    if "time_budget" in overrides and overrides["time_budget"] is not None:
        trainer.time_added = cfg.time_budget - trainer.elapsed
    return trainer.run()


def resumed_limits(meta: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with the limits of a resume made absolute (see `resume`): a new time budget
    counts from the time the run has already used, and a new limit of one kind drops the saved
    limit of the other (the saved clock of a finished run would stop it at once)."""
    out = dict(overrides)
    if out.get("max_steps") is None and out.get("time_budget") is None:
        return out
    out.setdefault("max_steps", None)
    if out.get("time_budget") is not None:
        used = meta.get("elapsed", 0.0)
        out["time_budget"] = float(out["time_budget"]) + (float(used) if isinstance(used, (int, float)) else 0.0)
    else:
        out["time_budget"] = None
    return out


def fine_tune(text: str | CorpusSource, run_dir: str | os.PathLike, init_from: str | os.PathLike,
              train_config: TrainConfig, *, dropout: float | None = None, weight_drop: float | None = None,
              corpus: dict[str, Any] | None = None, log: Log | None = None) -> TrainResult:
    """Start a new run on `text` from the weights of `init_from`.

    Characters the new text adds are appended to the vocabulary (old ids keep their meaning) with
    freshly initialised embedding and head rows. The architecture is the source's; only its
    regularisation (`dropout`, `weight_drop`) may change.
    """
    source = checkpoint.load(init_from)
    vocab = source.vocab.extend(as_source(text).chars())
    old = source.model_config
    changes = {k: v for k, v in (("dropout", dropout), ("weight_drop", weight_drop)) if v is not None}
    model_config = ModelConfig.from_dict({**old.to_dict(), "vocab_size": len(vocab), **changes})
    trainer = Trainer(text, run_dir, model_config, train_config, vocab=vocab, corpus=corpus, log=log)
    new_state = trainer.model.state_dict()
    n_old = old.vocab_size
    with torch.no_grad():
        _copy_rows(source.model.state_dict(), new_state, n_old)
    trainer.restart_average()
    trainer.extra_meta["init_from"] = str(source.path)
    trainer.extra_meta["starts"] = [{"step": 0, "time": 0.0, "label": f"fine-tuned from {source.path.parent.name}"}]
    metrics = Path(run_dir) / "metrics.jsonl"
    if trainer.dist.is_main and metrics.exists():
        metrics.unlink()
    return trainer.run()


def _copy_rows(old_state: dict[str, torch.Tensor], new_state: dict[str, torch.Tensor], n_old: int) -> None:
    for key, value in old_state.items():
        target = new_state[key]
        if target.shape == value.shape:
            target.copy_(value)
        else:  # embedding / head rows: old characters keep their trained rows
            target[:n_old].copy_(value)
