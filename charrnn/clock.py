"""The run's one clock: elapsed time over all sessions, progress through the schedule, time left,
throughput, and the decision to stop (step limit, time budget, a signal).

Everything that asks "how far along are we?" asks this object, so the learning-rate schedule, the
progress bar and the stop decision can never disagree.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from .config import TrainConfig


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to lr*min_lr_frac as `progress` goes 0 -> 1."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_frac + (1.0 - cfg.min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * p)))


class StopSignal:
    """Turns SIGINT/SIGTERM into 'stop at the next step boundary' (main thread only)."""

    def __init__(self) -> None:
        self.name: str | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignal]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {}

        def handler(signum: int, frame: Any) -> None:
            if self.name is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C means "now"
            self.name = signal.Signals(signum).name

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


class RunClock:
    """Wall clock and limits of one run. `elapsed` counts every session of the run (resumes add to it)."""

    def __init__(self, cfg: TrainConfig, elapsed: float = 0.0):
        self.cfg = cfg
        self.elapsed = elapsed
        self.eval_cost = 0.0  # seconds the final evaluation and save will take (estimated, then measured)
        self.step_cost = 0.0  # the last step's seconds: the budget must also hold one more step
        self._base = elapsed
        self._t0 = time.perf_counter()
        self._rate_at = (self._t0, 0)

    def start(self, step: int) -> None:
        """Start timing this session from `elapsed` (a fresh run's 0, or where a resumed run stopped)."""
        self._base = self.elapsed
        self._t0 = time.perf_counter()
        self._rate_at = (self._t0, step)

    def tick(self) -> float:
        self.elapsed = self._base + time.perf_counter() - self._t0
        return self.elapsed

    @contextlib.contextmanager
    def timing_step(self) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.step_cost = time.perf_counter() - start
        self.tick()

    def reserve(self) -> float:
        """Seconds the budget must still hold before another step: that step, then the final evaluation."""
        return self.eval_cost + self.step_cost

    @contextlib.contextmanager
    def timing_evaluation(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.eval_cost = time.perf_counter() - start
            self.tick()

    def progress(self, step: int) -> float:
        """How far through the lr schedule: by steps, by time, whichever is further."""
        if self.cfg.decay_steps:
            return step / self.cfg.decay_steps
        parts = []
        if self.cfg.max_steps:
            parts.append(step / self.cfg.max_steps)
        if self.cfg.time_budget:
            parts.append(self.elapsed / self.cfg.time_budget)
        return max(parts) if parts else 0.0

    def done_frac(self, step: int) -> float:
        """How much of the run's limit (steps or clock, whichever comes first) is used."""
        parts = [0.0]
        if self.cfg.max_steps:
            parts.append(step / self.cfg.max_steps)
        if self.cfg.time_budget:
            parts.append(self.elapsed / self.cfg.time_budget)
        return min(max(parts), 1.0)

    def chars_per_sec(self, step: int) -> float:
        """Training throughput since the previous call."""
        now = time.perf_counter()
        then, then_step = self._rate_at
        self._rate_at = (now, step)
        return (step - then_step) * self.cfg.batch_size * self.cfg.seq_len / max(now - then, 1e-9)

    def time_left(self, step: int, chars_per_sec: float) -> float | None:
        left = []
        if self.cfg.time_budget is not None:
            left.append(max(self.cfg.time_budget - self.elapsed, 0.0))
        if self.cfg.max_steps is not None and chars_per_sec > 0:
            steps = max(self.cfg.max_steps - step, 0)
            left.append(steps * self.cfg.batch_size * self.cfg.seq_len / chars_per_sec)
        return min(left) if left else None

    def limit_reached(self, step: int, reserve: float | None = None) -> str | None:
        """'max_steps' or 'time_budget' when the run must stop before another step, else None.

        `reserve` is what the budget must still hold (default `reserve()`; under torchrun the
        ranks' agreed value)."""
        if self.cfg.max_steps is not None and step >= self.cfg.max_steps:
            return "max_steps"
        # Stop early enough that the next step and the final evaluation still fit in the budget.
        reserve = self.reserve() if reserve is None else reserve
        if self.cfg.time_budget is not None and self.elapsed + reserve >= self.cfg.time_budget:
            return "time_budget"
        return None

    def nothing_left(self, run_dir: Any, step: int, reason: str, time_added: float | None) -> str:
        """A resumed run whose limits are already spent: say how to give it more."""
        if reason == "time_budget" and time_added is not None:
            return (f"a time budget of {time_added:.0f}s more is too short to train a step and evaluate "
                    f"(evaluating and saving take about {self.eval_cost:.0f}s); give more, e.g. --time-budget "
                    f"{max(5, math.ceil(3 * self.eval_cost / 60))}m")
        if reason == "max_steps":
            spent = f"its step limit ({self.cfg.max_steps})"
        elif self.elapsed < self.cfg.time_budget:  # some left, but less than the final evaluation takes
            spent = (f"the end of its time budget ({self.cfg.time_budget - self.elapsed:.0f}s left, less than "
                     f"the ~{self.eval_cost:.0f}s evaluating and saving take)")
        else:
            spent = f"its time budget ({self.cfg.time_budget:.0f}s, {self.elapsed:.0f}s used)"
        return (f"{run_dir} already reached {spent} at step {step}; to continue it, give a new limit: "
                f"--max-steps N (to step N > {step}) or --time-budget T (T more)")


def resumed_limits(meta: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with the limits of a resume made absolute: a new time budget counts from the
    time the run has already used, and a new limit of one kind drops the saved limit of the other
    (the saved clock of a finished run would stop it at once)."""
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
