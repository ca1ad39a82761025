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
from .config import ModelConfig, TrainConfig
from .corpus_cache import CorpusSource, as_source
from .data import StreamBatcher, stream_rows, to_long
from .distributed import Distributed
from .errors import CharRNNError
from .model import CharRNN, Hidden, detach_hidden
from .plots import LossCurve, plot_losses
from .runtime import autocast, derived_seed, release_free_memory, resolve_precision, seed_everything
from .threads import StepTuner
from .vocab import Vocab

LOG2E = 1.0 / math.log(2.0)
EXPLODE_FACTOR = 3.0  # char-rnn's guard: a loss this many times the first one means divergence

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

    @property
    def best_val_bits(self) -> float | None:
        return None if self.best_val_loss is None else self.best_val_loss * LOG2E


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to lr*min_lr_frac as `progress` goes 0 -> 1."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_frac + (1.0 - cfg.min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * p)))


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
        if meta.get("corpus", {}).get("sha256") not in (None, self.corpus["sha256"]):
            self.log({"event": "warning", "message": "the corpus changed since this run was saved; "
                      "continuing at the same position in the new text"})
        _set_rng_state(self.dist.rng_state_for_me(state), self.device)
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
            raise CharRNNError(f"training loss {what} at step {self.step}; try a lower --lr{where}")

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
                raise CharRNNError(f"validation loss became {val_loss} at step {self.step}; try a lower --lr{where}")
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
            plot_losses(self.history, self.run_dir / "losses.png", metrics=self.curve)
        except Exception as exc:  # a plot must never stop training
            self.log({"event": "warning", "message": f"could not draw the loss plot: {exc}"})

    def run(self) -> TrainResult:
        cfg = self.cfg
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CharRNNError(f"cannot create run folder {self.run_dir}: {exc.strerror or exc}") from None
        if self.dist.is_main:  # the one writer; another rank would delete rank 0's writes in flight
            checkpoint.remove_stale_temp_files(self.run_dir)  # half-written files of a killed run
        self.model.train()
        stop = _StopFlag()
        start_elapsed = self.elapsed
        t0 = time.perf_counter()
        last_eval_cost = 0.0
        recent: list[float] = []
        chars_per_step = cfg.batch_size * cfg.seq_len
        log_t, log_step = time.perf_counter(), self.step
        reason = "max_steps"
        metrics = _MetricsLog(self.run_dir / "metrics.jsonl" if self.dist.is_main else Path(os.devnull))
        threads = StepTuner(on_cpu=self.device.type == "cpu")  # the thread count, re-checked while training
        self.log({"event": "start", "run_dir": str(self.run_dir), "device": str(self.device),
                  "precision": self.precision, "params": sum(p.numel() for p in self.model.parameters()),
                  "model_config": self.model_config.to_dict(), "train_config": cfg.to_dict(),
                  "vocab_size": len(self.vocab), "windows_per_epoch": self.batcher.windows_per_epoch,
                  "resumed_at": self.step, "world_size": self.dist.world_size,
                  "threads": threads.current, "threads_auto": threads.active})
        try:
            with stop.installed():
                while True:
                    if cfg.max_steps is not None and self.step >= cfg.max_steps:
                        reason = "max_steps"
                        break
                    # Under torchrun all processes agree on the clock (it drives the schedule and the
                    # budget) and on signals, so every rank decides the same at the same step.
                    self.elapsed, last_eval_cost, stop.signal = self.dist.agree(self.elapsed, last_eval_cost, stop.signal)
                    # Stop early enough that the final evaluation still fits in the budget.
                    if cfg.time_budget is not None and self.elapsed + last_eval_cost >= cfg.time_budget:
                        reason = "time_budget"
                        break
                    if stop.signal:
                        reason = stop.signal
                        self.log({"event": "stopping", "signal": stop.signal, "step": self.step})
                        break
                    step_t0 = time.perf_counter()
                    loss = self.train_step()
                    threads.step_done(time.perf_counter() - step_t0)
                    self.elapsed = start_elapsed + time.perf_counter() - t0
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
                             reason, self.history)
        self.log({"event": "end", "reason": reason, "step": self.step, "elapsed": self.elapsed,
                  "best_val_loss": self.best_val_loss, "best_step": self.best_step,
                  "best_path": str(self.run_dir / checkpoint.BEST)})
        return result

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
    """Continue the run in `run_dir` exactly where it stopped; `overrides` change train-config limits."""
    ckpt = checkpoint.load(run_dir, prefer=checkpoint.LAST)
    if ckpt.path.name != checkpoint.LAST:
        raise CharRNNError(f"{run_dir} has no {checkpoint.LAST} to resume from")
    unknown = ckpt.vocab.unknown(as_source(text).chars())
    if unknown:
        raise CharRNNError(f"the corpus does not match the run's vocabulary (it adds {unknown[:10]}); "
                           "resume needs the same text; use --init-from to fine-tune on a new one")
    cfg = TrainConfig.from_dict({**ckpt.meta["train_config"], **overrides})
    trainer = Trainer(text, run_dir, ckpt.model_config, cfg, vocab=ckpt.vocab,
                      corpus=ckpt.meta.get("corpus"), log=log)
    trainer.restore(ckpt)
    return trainer.run()


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
