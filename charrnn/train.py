"""Truncated-BPTT training: the step, evaluation and checkpoints, and the loop that runs them.

The library never prints: progress goes to an optional `log(event)` callback (dicts). What a run
writes besides its checkpoints (metrics.jsonl, the loss plot, samples) are listeners on the
trainer's events (train_listeners.py); the data is prepared before the loop (training_data.py) and
one clock owns progress, time left and the stop decision (clock.py).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint, run_state
from .averaging import WeightAverage
from .clock import RunClock, StopSignal, lr_at, resumed_limits
from .config import ModelConfig, TrainConfig
from .corpus_cache import CorpusSource, as_source
from .data import to_long
from .distributed import Distributed
from .errors import CharRNNError
from .eval_record import EvalRecord
from .model import CharRNN, Hidden, detach_hidden
from .runtime import autocast, derived_seed, release_free_memory, resolve_precision, seed_everything
from .threads import StepTuner
from .train_listeners import TrainListener, default_listeners
from .training_data import check_fits_in_memory, prepare, val_streams
from .validation import ValidationFiles
from .vocab import Vocab

__all__ = ["StepResult", "TrainResult", "Trainer", "evaluate", "fine_tune", "lr_at", "resume", "train",
           "val_streams"]

LOG2E = 1.0 / math.log(2.0)
# Before an evaluation has been timed, the final one's cost is estimated (Trainer.estimate_eval_cost)
# from a probe of this many validation columns, plus the listeners' rehearsal and the checkpoint writes.
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


@dataclass
class StepResult:
    """One optimisation step: the (global batch's) loss, the learning rate used and the gradient norm."""

    loss: float
    lr: float
    grad_norm: float


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


class Trainer:
    """One training run in one run folder. `run()` trains until a limit, a signal or early stop."""

    def __init__(self, text: str | CorpusSource, run_dir: str | os.PathLike, model_config: ModelConfig,
                 train_config: TrainConfig, *, vocab: Vocab | None = None, corpus: dict[str, Any] | None = None,
                 log: Log | None = None, listeners: Sequence[TrainListener] | None = None,
                 settings: dict[str, Any] | None = None, validation: ValidationFiles | None = None):
        """`text` is a string, or any corpus_cache source (CorpusFiles, EncodedCorpus) for big corpora.

        `listeners` default to what `charrnn train` writes (metrics.jsonl, losses.png, samples,
        config.toml). `settings`: the resolved configuration config.toml records (config_file).
        `validation`: files to validate on instead of a split (the corpus is then trained on whole).
        """
        self.run_dir = Path(run_dir)
        self.cfg = train_config
        self.dist = Distributed.from_env(train_config.device)  # a torchrun job, or just this process
        self.log: Log = (log or (lambda event: None)) if self.dist.is_main else (lambda event: None)
        if listeners is None:
            listeners = default_listeners(self.run_dir, fresh=True, settings=settings) if self.dist.is_main else []
        self.listeners = list(listeners)
        self.device = self.dist.device
        self.precision = resolve_precision(train_config.precision, self.device)
        data = prepare(text, model_config, train_config, self.dist, vocab=vocab, corpus=corpus,
                       validation=validation, log=self.log)
        self.vocab, self.model_config, self.corpus = data.vocab, data.model_config, data.corpus
        self.batcher, self.val = data.batcher, data.val
        self.extra_meta: dict[str, Any] = {}
        if validation is not None:
            self.extra_meta["validation"] = validation.to_meta()  # so that resume validates on the same text
        self.dist.check_same([str(self.run_dir.resolve()), self.corpus.get("sha256"), len(self.vocab)],
                             "run folder or corpus")

        check_fits_in_memory(self.model_config, train_config, self.device)
        seed_everything(train_config.seed)
        self.model = CharRNN(self.model_config).to(self.device)
        self.train_model = self.dist.wrap(self.model, train_config.seed)  # DDP under torchrun
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train_config.lr,
                                           weight_decay=train_config.weight_decay)
        # --ema: the moving average is what is evaluated, kept as best and sampled.
        self.average = WeightAverage(self.model, train_config.ema) if train_config.ema else None
        self.clock = RunClock(train_config)
        self.step = 0
        self.epoch = 0
        self.index = 0  # next window within the epoch
        self.hidden: Hidden | None = None
        self.record = EvalRecord()  # the evaluations so far, the best one, patience, the divergence guard
        self.last_step: StepResult | None = None
        self.created = run_state.now_iso()
        self.restored = False  # True once `restore` continued a saved run
        self.time_added: float | None = None  # on a resume, the seconds a new time budget gave

    @property
    def eval_model(self) -> CharRNN:
        """The weights that are evaluated, kept as best.pt and sampled: the average with --ema."""
        return self.model if self.average is None else self.average.module  # type: ignore[return-value]

    def epoch_float(self) -> float:
        return self.epoch + self.index / self.batcher.windows_per_epoch

    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        """Continue a run exactly where `ckpt` (a last.pt) left it."""
        run_state.restore(self, ckpt)
        self.restored = True
        for listener in self.listeners:
            listener.on_resume(self)

    def save_last(self) -> None:
        state = run_state.train_state(self)  # under torchrun this gathers from every rank: all ranks call it
        self.extra_meta.update(self.dist.describe(self.model))
        if self.dist.is_main:
            meta = run_state.meta(self)
            checkpoint.save(self.run_dir / checkpoint.LAST, self.model, meta, state)
            checkpoint.write_meta(self.run_dir, meta)

    # ----- one step ----------------------------------------------------------------------------
    def train_step(self) -> StepResult:
        cfg = self.cfg
        if self.index >= self.batcher.windows_per_epoch:
            self.epoch += 1
            self.index = 0
            self.hidden = None  # a new epoch starts at a new offset: the old state does not fit
        x, y = self.batcher.window(self.epoch, self.index)
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        lr = lr_at(cfg, self.step, self.clock.progress(self.step))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.precision):
            logits, hidden = self.train_model(x, self.hidden if cfg.stateful else None)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.model, self.step)
        self.hidden = reset_some_rows(detach_hidden(hidden), cfg, self.step, self.dist) if cfg.stateful else None
        self.step += 1
        self.index += 1
        # Under torchrun: the whole global batch's loss.
        return StepResult(self.dist.mean(loss.item()), lr, float(grad_norm))

    # ----- evaluation --------------------------------------------------------------------------
    def evaluate_and_save(self, train_loss: float | None) -> bool:
        """Full validation pass; keep the best checkpoint. Returns True if patience ran out."""
        for listener in self.listeners:
            listener.before_eval(self)
        val_loss = self.dist.evaluate(evaluate, self.eval_model, self.val, self.device, self.precision)
        self.record.check_validation_loss(val_loss, self.step, self.cfg, self.run_dir)
        improved = self.record.add(step=self.step, epoch=self.epoch_float(), elapsed=self.clock.elapsed,
                                   train_loss=train_loss, val_loss=val_loss,
                                   lr=self.cfg.lr if self.last_step is None else self.last_step.lr)
        if improved and self.dist.is_main:
            checkpoint.save(self.run_dir / checkpoint.BEST, self.eval_model, run_state.meta(self))
        self.save_last()  # the training weights (the average rides in its training state)
        event = {"event": "eval", "step": self.step, "val_loss": val_loss, "val_bits": val_loss * LOG2E,
                 "train_loss": train_loss, "best_val_loss": self.record.best_val_loss, "improved": improved}
        for listener in self.listeners:
            listener.on_eval(self, event)
        self.log(event)
        release_free_memory()
        return self.record.patience_out(self.cfg.patience)

    # ----- the loop ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        resumed_at = self.step if self.restored else None
        if resumed_at is not None:
            run_state.mark_start(self, "resumed")
        created = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CharRNNError(f"cannot create run folder {self.run_dir}: {exc.strerror or exc}") from None
        if self.dist.is_main:  # the one writer; another rank would delete rank 0's writes in flight
            checkpoint.remove_stale_temp_files(self.run_dir)  # half-written files of a killed run
        self.model.train()
        self.threads = StepTuner(on_cpu=self.device.type == "cpu")  # the thread count, re-checked while training
        self.log(start_event(self))
        failed = True
        try:
            for listener in self.listeners:
                listener.on_start(self)
            reason = self._loop(resumed_at)
            failed = False
        finally:
            for listener in self.listeners:
                listener.on_end(self, failed)
            if failed and self.dist.is_main:
                run_state.remove_if_nothing_saved(self.run_dir, created)
        record = self.record
        self.log({"event": "end", "reason": reason, "step": self.step, "elapsed": self.clock.elapsed,
                  "best_val_loss": record.best_val_loss, "best_step": record.best_step,
                  "best_path": str(self.run_dir / checkpoint.BEST)})
        return TrainResult(self.run_dir, record.best_val_loss, record.best_step, self.step, self.clock.elapsed,
                           reason, record.history, self.cfg, self.model_config)

    def _loop(self, resumed_at: int | None) -> str:
        """Step until a limit, a signal or early stop; end on an evaluated, saved step. Returns why."""
        cfg, clock, stop = self.cfg, self.clock, StopSignal()
        clock.cfg = cfg  # the limits may have changed since the trainer was made (resume overrides)
        clock.start(self.step)
        if (cfg.time_budget is not None and clock.elapsed < cfg.time_budget
                and not (cfg.max_steps is not None and self.step >= cfg.max_steps)):
            clock.eval_cost = estimate_eval_cost(self)  # counted inside the budget
            clock.tick()
        recent: list[float] = []  # training losses since the last evaluation
        with stop.installed():
            while True:
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    reason = "max_steps"
                    break
                # Under torchrun all processes agree on the clock (it drives the schedule and the
                # budget) and on signals, so every rank decides the same at the same step.
                clock.elapsed, reserve, stop.name = self.dist.agree(clock.elapsed, clock.reserve(), stop.name)
                reason = clock.limit_reached(self.step, reserve) or stop.name
                if reason:
                    if reason == stop.name:
                        self.log({"event": "stopping", "signal": stop.name, "step": self.step})
                    break
                with clock.timing_step():
                    result = self.last_step = self.train_step()
                self.threads.step_done(clock.step_cost)
                self.record.check_training_loss(result.loss, self.step, cfg, self.run_dir)
                recent.append(result.loss)
                row = {"step": self.step, "loss": round(result.loss, 5), "lr": result.lr, "time": round(clock.elapsed, 3)}
                for listener in self.listeners:
                    listener.on_step(self, row)
                if self.step % cfg.log_interval == 0:
                    self.log(step_event(self, result, recent))
                if self.step % cfg.eval_interval == 0:
                    with clock.timing_evaluation():
                        train_loss = sum(recent) / len(recent)
                        recent.clear()
                        patience_out = self.evaluate_and_save(train_loss)
                    if patience_out:
                        reason = "early_stop"
                        break
            if self.step == resumed_at and reason in ("max_steps", "time_budget"):
                raise CharRNNError(clock.nothing_left(self.run_dir, self.step, reason, self.time_added))
            # Still under the handler: whatever the shell gave us, a Ctrl-C during this last save
            # means "now" (a second one) and SIGTERM lets it finish, as during the loop.
            if not self.record.evaluated_at(self.step):
                self.evaluate_and_save(sum(recent) / len(recent) if recent else None)
                clock.tick()
                self.save_last()
        return reason


def start_event(trainer: Trainer) -> dict[str, Any]:
    """The event that opens a session: what is trained, where, how."""
    return {"event": "start", "run_dir": str(trainer.run_dir), "device": str(trainer.device),
            "precision": trainer.precision, "params": sum(p.numel() for p in trainer.model.parameters()),
            "model_config": trainer.model_config.to_dict(), "train_config": trainer.cfg.to_dict(),
            "vocab_size": len(trainer.vocab), "windows_per_epoch": trainer.batcher.windows_per_epoch,
            "resumed_at": trainer.step, "resumed": trainer.restored, "elapsed": trainer.clock.elapsed,
            "world_size": trainer.dist.world_size, "threads": trainer.threads.current,
            "threads_auto": trainer.threads.active}


def step_event(trainer: Trainer, result: StepResult, recent: list[float]) -> dict[str, Any]:
    """The progress event logged every --log-interval steps."""
    clock, window = trainer.clock, recent[-trainer.cfg.log_interval:]
    rate = clock.chars_per_sec(trainer.step)
    return {"event": "step", "step": trainer.step, "epoch": trainer.epoch_float(),
            "train_loss": sum(window) / len(window), "lr": result.lr, "chars_per_sec": rate,
            "elapsed": clock.elapsed, "time_left": clock.time_left(trainer.step, rate),
            "best_val_loss": trainer.record.best_val_loss, "done_frac": clock.done_frac(trainer.step),
            "grad_norm": result.grad_norm}


def reset_some_rows(hidden: Hidden, cfg: TrainConfig, step: int, dist: Distributed) -> Hidden:
    """Restart a random few streams from the zero state.

    With the state always carried, the model almost never sees a zero state after the first
    window of an epoch, and then writes nonsense for the first characters after a short prime
    (the state a sample starts from). A few fresh starts per step teach it that case too.
    """
    if not cfg.state_reset_prob:
        return hidden
    # Drawn for the whole global batch from (seed, step), not from the global RNG: every rank of a
    # torchrun job and every resume draws the same resets, so N processes compute what one does.
    gen = torch.Generator().manual_seed(derived_seed(cfg.seed, step))
    keep = torch.rand(cfg.batch_size, generator=gen) >= cfg.state_reset_prob
    keep = keep[dist.rows(cfg.batch_size)].to(hidden[0].device).view(1, -1, 1)
    if isinstance(hidden, tuple):
        return tuple(h * keep.to(h.dtype) for h in hidden)  # type: ignore[return-value]
    return hidden * keep.to(hidden.dtype)


def estimate_eval_cost(trainer: Trainer) -> float:
    """Seconds the final evaluation and save will take, before one has run (afterwards the last
    one's measured cost is used): the validation pass over its first columns, scaled up, the
    listeners' rehearsal (the plot drawn, not written) and the writes. Without it a run that
    ends before its first evaluation overshoots its budget by a whole validation pass."""
    columns = trainer.val.shape[1] - 1  # characters scored per stream
    probe = min(columns, EVAL_PROBE_COLUMNS)
    t = time.perf_counter()
    trainer.dist.evaluate(evaluate, trainer.eval_model, trainer.val[:, : probe + 1], trainer.device, trainer.precision)
    scored = (time.perf_counter() - t) * columns / max(probe, 1)
    t = time.perf_counter()
    for listener in trainer.listeners:
        listener.rehearse(trainer)
    release_free_memory()  # as after every evaluation
    rehearsed = time.perf_counter() - t
    weights = 4 * sum(p.numel() for p in trainer.model.parameters()) * (4 if trainer.average is None else 5)  # + Adam
    return EVAL_MARGIN * (scored + rehearsed) + SAVE_ALLOWANCE + weights / SAVE_BYTES_PER_SEC


def train(text: str | CorpusSource, run_dir: str | os.PathLike, model_config: ModelConfig | None = None,
          train_config: TrainConfig | None = None, *, corpus: dict[str, Any] | None = None,
          log: Log | None = None, settings: dict[str, Any] | None = None,
          validation: ValidationFiles | None = None) -> TrainResult:
    """Train a new model on `text` into `run_dir` (created; an existing run there is replaced).

    `text` may also be a `CorpusFiles` (files / a directory, memory-mapped) or an `EncodedCorpus`.
    """
    trainer = Trainer(text, run_dir, model_config or ModelConfig(), train_config or TrainConfig(),
                      corpus=corpus, log=log, settings=settings, validation=validation)
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
    trainer = Trainer(text, run_dir, ckpt.model_config, cfg, vocab=ckpt.vocab, corpus=ckpt.meta.get("corpus"),
                      log=log, validation=ValidationFiles.from_meta(ckpt.meta.get("validation")))
    trainer.restore(ckpt)
    if overrides.get("time_budget") is not None:
        trainer.time_added = cfg.time_budget - trainer.clock.elapsed
    return trainer.run()


def fine_tune(text: str | CorpusSource, run_dir: str | os.PathLike, init_from: str | os.PathLike,
              train_config: TrainConfig, *, dropout: float | None = None, weight_drop: float | None = None,
              corpus: dict[str, Any] | None = None, log: Log | None = None,
              settings: dict[str, Any] | None = None, validation: ValidationFiles | None = None) -> TrainResult:
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
    trainer = Trainer(text, run_dir, model_config, train_config, vocab=vocab, corpus=corpus, log=log,
                      settings=settings, validation=validation)
    new_state = trainer.model.state_dict()
    n_old = old.vocab_size
    with torch.no_grad():
        _copy_rows(source.model.state_dict(), new_state, n_old)
    if trainer.average is not None:
        trainer.average.restart(trainer.model)
    trainer.extra_meta["init_from"] = str(source.path)
    trainer.extra_meta["starts"] = [{"step": 0, "time": 0.0, "label": f"fine-tuned from {source.path.parent.name}"}]
    return trainer.run()


def _copy_rows(old_state: dict[str, torch.Tensor], new_state: dict[str, torch.Tensor], n_old: int) -> None:
    for key, value in old_state.items():
        target = new_state[key]
        if target.shape == value.shape:
            target.copy_(value)
        else:  # embedding / head rows: old characters keep their trained rows
            target[:n_old].copy_(value)
