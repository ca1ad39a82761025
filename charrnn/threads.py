"""How many threads torch and NumPy's BLAS use, and how OpenMP's idle threads wait.

On a machine with spare cores, every core helps (two threads train ~1.7x faster than one on two
cores). When another program holds a core, the same setting falls apart: a parallel region ends
only when its slowest thread does, and a thread that shares its core with a busy neighbour arrives
late every time, while the others spin at the barrier and burn the time the neighbour would have
yielded. On 2 cores beside one busy process the default 2x256 run fell from 30k to 14k chars/s (one
thread: 27k); NumPy's OpenBLAS sampling at batch 1 fell 20-fold. So:

* When other programs already keep half a core or more busy as a command starts (a 0.1 s look at
  /proc/stat, and the count of runnable tasks), idle OpenMP threads sleep at once
  (OMP_WAIT_POLICY=PASSIVE). Torch uses the free cores while there are any, and every core once
  others fill them all: a sleeping thread takes only its share of the CPU. Beside two busy
  processes batch-64 sampling ran at 19k chars/s with 2 PASSIVE threads against 13k with one and
  2k with 2 spinning ones. NumPy's OpenBLAS threads spin whatever OpenMP is told, so BLAS keeps to
  the free cores.
* A quiet start gets a spin of 5,000 iterations (GOMP_SPINCOUNT; libgomp's default is 300,000).
  PASSIVE costs 13-30% on a quiet machine (every parallel region starts with a wake-up), and so
  does a short spin at the many small regions of a sampling step (batch 64: 28.9k chars/s with the
  default spin, 23.7k at 1,000, 27.5k at 5,000). The default's long spin costs the other way: a
  torch thread still spinning after the prime's warm-up takes the core NumPy's BLAS needs, so
  batch-1 sampling in 400-character calls ran at 4.8-7.5k chars/s against 9.6-10.8k at 5,000.
  Longer spins also collapse sooner when a neighbour arrives later (beside one busy process,
  batch-64 sampling: 0.85x of the best at 1,000, 0.56x at 5,000, 0.36x at the default). libgomp
  reads its policy once, when torch is imported, so it is chosen at process start
  (`prepare_process`, which the CLI calls before any command imports torch).
* The thread count is chosen when work starts (`apply`) from the load measured on the other
  cores. After a quiet start, training re-checks it by timing steps at each candidate count
  (`StepTuner`): a neighbour who arrives later makes two spinning threads several times slower,
  and one thread wins the A/B. After a loaded start the choice stands: beside busy programs step
  times jump 2x from step to step, and short trials picked the slower count by chance. Sampling
  commands keep their start's choice: they are short, and one started beside the neighbour gets
  the loaded policy.
* Users decide when they say so: `--threads N` / `CHARRNN_THREADS=N` fix the count, and an
  `OMP_NUM_THREADS`, `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` already in the environment is left alone
  (a fixed count is also what makes runs on the same machine repeat bit for bit).

Library users get the same with `charrnn.threads.prepare_process()` before importing torch (or any
time later for the thread count alone); without it the library leaves torch's threads as it finds
them. `benchmarks/contention.py` measures the policy against the alternatives.

This module imports neither torch nor NumPy at import time: the CLI calls it before either loads.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import CharRNNError

THREADS_ENV = "CHARRNN_THREADS"
# How long libgomp's idle threads spin before they sleep after a quiet start (its default: 300,000).
SPIN_COUNT = "5000"
MAX_THREADS = 1024
# Other programs keeping at least this much of a core busy when a command starts make it a loaded
# start: OpenMP's idle threads then sleep at once (PASSIVE).
LOADED_AT_START = 0.5
START_PROBE = 0.1  # seconds of /proc/stat the decision reads (before torch loads)


@dataclass(frozen=True)
class ThreadPlan:
    """What this process was asked for: a fixed count, or None (chosen from the load)."""

    threads: int | None
    source: str  # "--threads", "CHARRNN_THREADS", "OMP_NUM_THREADS" or "auto"
    openmp_wait: str  # how idle OpenMP threads wait: what we set, what the user set, or "default"

    @property
    def threads_sleep(self) -> bool:
        """Whether idle OpenMP threads sleep at once (PASSIVE): then torch may share busy cores."""
        return "OMP_WAIT_POLICY=PASSIVE" in self.openmp_wait.upper()


_plan: ThreadPlan | None = None  # None: nobody asked; the library leaves threads as it finds them
_applied = False
_probe: tuple[float, tuple[float, float] | None, float] | None = None  # when, /proc/stat, own CPU
# Cores others kept busy during the start's look, while this process slept: later measurements
# overlap torch's import, which takes a share of the CPU from them.
_start_load: float | None = None


def parse_threads(value: str | int | None, source: str) -> int | None:
    """'auto' (or nothing) -> None; a whole number 1..1024 -> itself; anything else is an error."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("", "auto"):
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 1 <= n <= MAX_THREADS:
        raise CharRNNError(f"{source} takes a number of threads (1..{MAX_THREADS}) or 'auto', got {value!r}")
    return n


def available_cores() -> int:
    """Cores this process may run on (its affinity mask: a container or taskset may allow fewer)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def prepare_process(threads: str | int | None = None) -> ThreadPlan:
    """Choose this process's thread count and OpenMP waiting policy. Call before torch is imported.

    `threads`: a number fixes the count; None or 'auto' takes $CHARRNN_THREADS, else an explicit
    $OMP_NUM_THREADS, else chooses from the load. Idle threads are made to sleep at once
    (OMP_WAIT_POLICY=PASSIVE) when other programs keep the cores busy as this starts, unless the
    user set OMP_WAIT_POLICY or GOMP_SPINCOUNT; that only takes effect if torch is not loaded yet.
    """
    global _plan, _applied, _probe, _start_load
    _start_load = None
    n, source = parse_threads(threads, "--threads"), "--threads"
    if n is None:
        n, source = parse_threads(os.environ.get(THREADS_ENV), THREADS_ENV), THREADS_ENV
    if n is None and os.environ.get("OMP_NUM_THREADS"):
        try:  # the user's (or torchrun's) own setting: torch reads it itself; an odd value is theirs
            n, source = parse_threads(os.environ["OMP_NUM_THREADS"].split(",")[0], "OMP_NUM_THREADS"), "OMP_NUM_THREADS"
        except CharRNNError:
            n = None
    if n is None:
        source = "auto"
    user_wait = [f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ]
    if user_wait:
        wait = " ".join(user_wait)
    elif _torch_loaded():
        wait = "as found (torch was loaded first)"  # libgomp has read its environment: setting it now changes nothing
    elif n != 1 and _loaded_at_start():  # (one thread never waits for another)
        # Beside busy programs, sleeping at once beats any spin (contention.py: batch-64 sampling
        # beside 2 busy processes, 2 PASSIVE threads 19k chars/s, 1 thread 13k, 2 spinning 2k);
        # on a quiet machine it costs 13-30%, so only a loaded start gets it.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        wait = "OMP_WAIT_POLICY=PASSIVE"
    else:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
        wait = f"GOMP_SPINCOUNT={SPIN_COUNT}"
    if n is not None and source != "OMP_NUM_THREADS" and not _torch_loaded():
        os.environ["OMP_NUM_THREADS"] = str(n)  # the pool starts at the right size; children inherit it
    _plan = ThreadPlan(n, source, wait)
    _applied = False
    _probe = (time.monotonic(), _cpu_times(), _own_cpu())
    return _plan


def _torch_loaded() -> bool:
    """Whether libgomp has read its environment already (it does when torch loads)."""
    return "torch" in sys.modules


def current_plan() -> ThreadPlan | None:
    return _plan


def reset() -> None:
    """Forget the plan: from now on the library leaves torch's threads as it finds them again."""
    global _plan, _applied, _probe
    _plan, _applied, _probe = None, False, None


def apply() -> int | None:
    """Set torch's and the BLAS's thread counts as planned, once per process; the count, or None.

    Called where work starts (training, sampling, scoring): with an automatic plan the count is
    chosen from the load the other programs put on the cores since `prepare_process`.
    """
    global _applied
    if _plan is None:
        return None
    if _applied:
        import torch

        return torch.get_num_threads()
    _applied = True
    if _plan.threads is not None:
        set_threads(_plan.threads)
        return _plan.threads
    busy_elsewhere = other_load()
    n = threads_for_load(busy_elsewhere)
    # NumPy's OpenBLAS threads spin whatever OpenMP is told, so they keep to the free cores
    # (batch-1 sampling fell 20-fold otherwise). Torch's sleep when idle under PASSIVE: while a
    # core is free, the free cores are still best (beside 1 busy process on 2 cores, one thread
    # beat two sleeping ones in 5 of 5 runs: batch-64 sampling by 7-30%, training by 3-8%); once
    # others fill every core, every core helps (each thread gets its share of the CPU: beside 2
    # busy processes two sleeping threads trained at 7.9-10.2k chars/s, one at 7.1-7.3k).
    oversubscribed = (busy_elsewhere if _start_load is None else _start_load) >= available_cores() - 0.5
    torch_threads = available_cores() if _plan.threads_sleep and oversubscribed else n
    set_threads(torch_threads, blas=n)
    return torch_threads


def threads_for_load(busy_elsewhere: float, cores: int | None = None) -> int:
    """Threads to use when other programs keep `busy_elsewhere` cores busy (a thread that has to
    share a core makes every parallel region wait for it, so only the free cores are used)."""
    cores = cores or available_cores()
    return max(1, min(cores, int(cores - busy_elsewhere + 0.3)))


def other_load(window: float = 0.1) -> float:
    """Cores kept busy by other programs: /proc/stat's busy time less this process's own CPU time,
    over the time since `prepare_process` (or over `window` seconds now, if that is too short).
    Niced programs count only when this process is niced too: otherwise they yield to it."""
    start = _probe
    if start is None or time.monotonic() - start[0] < 0.25 or start[1] is None:
        start = (time.monotonic(), _cpu_times(), _own_cpu())
        time.sleep(window)
    return _busy_since(start)


def _loaded_at_start() -> bool:
    """Whether other programs keep at least LOADED_AT_START of a core busy right now, over START_PROBE
    seconds: /proc/stat's busy time (less ours) says so, and so does the median count of other
    runnable tasks (/proc/loadavg). The count keeps a program that has just ended (its exit still
    shows in /proc/stat for a moment: a command started right after another) from counting."""
    global _start_load
    start = (time.monotonic(), _cpu_times(), _own_cpu())
    runnable = []
    for _ in range(5):
        time.sleep(START_PROBE / 5)
        runnable.append(_runnable_others())
    _start_load = _busy_since(start)
    if _start_load < LOADED_AT_START:
        return False
    counts = [r for r in runnable if r is not None]
    return not counts or statistics.median(counts) >= 1


def _runnable_others() -> int | None:
    """Tasks ready to run now, less this one (the 4th field of /proc/loadavg); None where unknown."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return max(0, int(f.read().split()[3].split("/")[0]) - 1)
    except (OSError, ValueError, IndexError):
        return None


def _busy_since(start: tuple[float, tuple[float, float] | None, float]) -> float:
    end = (time.monotonic(), _cpu_times(), _own_cpu())
    if start[1] is None or end[1] is None:  # no /proc/stat (not Linux): the 1-minute load average
        try:
            return max(0.0, os.getloadavg()[0] - 1.0)  # less our own start-up
        except (AttributeError, OSError):
            return 0.0
    elapsed = end[0] - start[0]
    busy = (end[1][0] - start[1][0]) - (end[2] - start[2])
    return max(0.0, busy / max(elapsed, 1e-6))


def _cpu_times() -> tuple[float, float] | None:
    """(busy, idle) seconds since boot of the cores this process may use, from /proc/stat (only
    those: under taskset or a container's cpuset, the host's other cores are not our business)."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = None
    # Niced programs (the "nice" column) yield their cores to a process that is not niced itself, so
    # then they leave the core free for our threads and do not count.
    count_niced = _own_niceness() > 0
    busy = idle = 0
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *values = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    if busy or idle:
                        break  # the per-core lines come together, right after the total
                    continue
                if allowed is not None and int(name[3:]) not in allowed:
                    continue
                fields = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
                core_idle = fields[3] + fields[4]
                idle += core_idle
                busy += sum(fields) - core_idle - (0 if count_niced else fields[1])  # steal counts as busy
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return busy / tick, idle / tick


def _own_niceness() -> int:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return 0


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def set_threads(n: int, blas: int | None = None) -> None:
    """Use n threads in torch's intra-op pool (and oneDNN, MKL) and `blas` (default n) in NumPy's BLAS."""
    import numpy  # noqa: F401  (loads the BLAS, so the controller below finds it)
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _blas_controller().limit(limits=n if blas is None else blas, user_api="blas")


_controller = None


def _blas_controller():  # noqa: ANN202 (threadpoolctl is imported lazily)
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


class StepTuner:
    """An online A/B of the thread count for a loop of equal steps (training).

    Starts with the count `apply` chose. Every so often it times the other candidate (all cores,
    or one) for a few steps and switches only if the other is `margin` faster by median step time
    (a tie is noise, and each switch costs a trial). It re-checks `period` seconds after a change,
    doubling the wait each time the other count loses (up to `max_period`), and at once when the
    current count's steps become `drift` times slower or faster than when it was chosen (a
    neighbour came or went; at most once per `period`). The first `settle_steps` steps of a run
    are not timed (allocations, oneDNN's first primitives: they would make any trial look fast).
    The first trial waits a `period`, drift or not: the choice made at start is already the best
    guess (on a quiet machine all cores are 1.5-1.8x faster), and a trial in the first seconds only
    costs time. A trial whose first timed step is already twice as slow as the current median ends
    there: on a loaded machine the all-cores steps can be several times slower, and a trial should
    cost a step or two, not a minute.
    Inactive (every call a no-op) unless the plan is automatic and OpenMP's threads spin (a quiet
    start). After a loaded start the start's choice stands (see `apply`).
    """

    def __init__(self, period: float = 15.0, max_period: float = 120.0, trial_steps: int = 5,
                 warm_steps: int = 1, drift: float = 1.25, margin: float = 0.1, settle_steps: int = 2,
                 clock: Callable[[], float] = time.monotonic, on_cpu: bool = True):
        # On a GPU the CPU threads hardly matter: nothing to tune. Nor when idle threads sleep
        # (a loaded start): step times beside busy programs vary 2x from step to step, so a few
        # steps of a trial picked the slower count by chance (training beside 2 busy processes:
        # 6.1-8.1k chars/s with trials, 7.4-10.4k without).
        self.active = (on_cpu and _plan is not None and _plan.threads is None and not _plan.threads_sleep
                       and available_cores() > 1)
        self.base_period, self.max_period, self.period = period, max_period, period
        self.trial_steps, self.warm_steps, self.drift, self.clock = trial_steps, warm_steps, drift, clock
        self.margin, self.unsettled = margin, settle_steps
        self.current = apply() or _torch_threads()  # a fixed count is set here too
        self.candidates = sorted({available_cores(), 1})
        self.recent: list[float] = []  # the last step times at the current count
        self.reference: float | None = None  # the current count's median step time when chosen
        self.trial: int | None = None  # the count being tried
        self.trial_times: list[float] = []
        # The start's choice is the best guess there is (all cores on a quiet machine, the free
        # cores beside busy programs): the first trial waits a period, even when steps drift. The
        # first seconds' steps speed up as caches and allocations settle, which reads as drift:
        # trying at once, 2 of 3 quiet 8-second runs tried one thread and one of them kept it.
        self.next_check = clock() + period
        self.last_trial_end = clock()
        self.trials = 0

    def step_done(self, seconds: float) -> None:
        """Report one step's duration (only the step: evaluation and saving are not steps)."""
        if not self.active:
            return
        if self.unsettled:
            self.unsettled -= 1
            return
        if self.trial is not None:
            self._trial_step(seconds)
            return
        self.recent.append(seconds)
        del self.recent[: -self.trial_steps]
        if len(self.recent) < self.trial_steps:
            return
        now_median = statistics.median(self.recent)
        if self.reference is None:
            self.reference = now_median
        moved = not (1 / self.drift <= now_median / self.reference <= self.drift)
        now = self.clock()
        if now >= self.next_check or (moved and now >= self.last_trial_end + self.base_period):
            self.trial, self.trial_times = next(c for c in self.candidates if c != self.current), []
            self.trials += 1
            set_threads(self.trial)

    def _trial_step(self, seconds: float) -> None:
        self.trial_times.append(seconds)
        timed = self.trial_times[self.warm_steps:]
        base = statistics.median(self.recent)
        if not timed or (timed[0] <= 2 * base and len(timed) < self.trial_steps):
            return
        assert self.trial is not None
        if statistics.median(timed) < (1.0 - self.margin) * base:  # the other count is faster: keep it
            self.current, self.period = self.trial, self.base_period
            self.recent = timed[-self.trial_steps:]
            self.reference = statistics.median(self.recent) if len(self.recent) >= self.trial_steps else None
        else:
            set_threads(self.current)
            self.period = min(self.period * 2, self.max_period)
            self.recent, self.reference = [], None  # re-measure: the trial may have disturbed the machine
        self.trial = None
        self.last_trial_end = self.clock()
        self.next_check = self.last_trial_end + self.period
