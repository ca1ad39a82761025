"""Threads and OpenMP's waiting (charrnn.threads): set before torch loads, chosen from the load,
re-checked while training, and the user's own settings win."""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import one_error_line

from charrnn import threads
from charrnn.cli import main

ROOT = Path(__file__).resolve().parents[1]
THREAD_ENV = ("CHARRNN_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

# Runs the real CLI as `python -m charrnn` does, then reports what the process ended up with.
REPORT = r"""
import json, os, runpy, sys
from charrnn import threads  # (imports no torch)
if os.environ.get("TEST_START") in ("loaded", "quiet"):  # what the 0.1 s look at the other cores finds
    threads._loaded_at_start = lambda: os.environ["TEST_START"] == "loaded"
sys.argv = ["charrnn", *sys.argv[1:]]
try:
    runpy.run_module("charrnn", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
import torch
from charrnn import threads
plan = threads.current_plan()
print(json.dumps({"code": code, "torch_threads": torch.get_num_threads(), "plan": plan and plan.__dict__,
                  "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}}))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.train import train

    run = tmp_path_factory.mktemp("threads") / "run"
    text = "to be or not to be, that is the question\n" * 60
    train(text, run, ModelConfig(embed_dim=8, hidden_size=16, num_layers=1, dropout=0.0),
          TrainConfig(batch_size=4, seq_len=16, max_steps=2, time_budget=None, eval_interval=2, device="cpu",
                      precision="fp32", sample_length=0, warmup_steps=0))
    (run.parent / "text.txt").write_text(text[:400], encoding="utf-8")
    return run


def cli_report(checkpoint: Path, *args: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    clean["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", REPORT, "score", str(checkpoint.parent / "text.txt"), "-c",
                          str(checkpoint), *args], env={**clean, **env}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["code"] in (0, None), out.stderr
    return report


def test_the_cli_sets_openmp_waiting_before_torch_loads(checkpoint):
    """libgomp reads its environment when torch is imported: a loaded start's PASSIVE must be in
    the environment by then (the plan would say "torch was loaded first" otherwise)."""
    report = cli_report(checkpoint, TEST_START="loaded")
    assert report["plan"]["openmp_wait"] == "OMP_WAIT_POLICY=PASSIVE"
    assert report["env"]["OMP_WAIT_POLICY"] == "PASSIVE" and report["env"]["GOMP_SPINCOUNT"] is None
    assert report["plan"]["source"] == "auto" and report["plan"]["threads"] is None
    assert 1 <= report["torch_threads"] <= threads.available_cores()  # (from the real load now)
    # A quiet start gets a bounded spin, also set in time.
    report = cli_report(checkpoint, TEST_START="quiet")
    assert report["plan"]["openmp_wait"] == f"GOMP_SPINCOUNT={threads.SPIN_COUNT}"
    assert report["env"]["OMP_WAIT_POLICY"] is None and report["env"]["GOMP_SPINCOUNT"] == threads.SPIN_COUNT


@pytest.mark.parametrize("args, env, threads_expected, source", [
    (["--threads", "1"], {}, 1, "--threads"),
    ([], {"CHARRNN_THREADS": "3"}, 3, "CHARRNN_THREADS"),
    (["--threads", "2"], {"CHARRNN_THREADS": "3"}, 2, "--threads"),  # the option beats the variable
    ([], {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"}, 1, "OMP_NUM_THREADS"),
])
def test_the_users_settings_win(checkpoint, args, env, threads_expected, source):
    report = cli_report(checkpoint, *args, TEST_START="loaded", **env)
    assert report["torch_threads"] == threads_expected
    assert report["plan"]["source"] == source
    if "OMP_WAIT_POLICY" in env:  # the user's own waiting policy is left alone, and nothing is added
        assert report["env"]["OMP_WAIT_POLICY"] == "ACTIVE" and report["env"]["GOMP_SPINCOUNT"] is None
    elif threads_expected == 1:  # one thread never waits for another: no load to look at
        assert report["env"]["OMP_WAIT_POLICY"] is None and report["env"]["GOMP_SPINCOUNT"] == threads.SPIN_COUNT
    else:  # the user's count, with the loaded start's waiting
        assert report["env"]["OMP_WAIT_POLICY"] == "PASSIVE"


@pytest.mark.parametrize("args, env, fragment", [
    (["--threads", "zero"], {}, "--threads takes a number of threads"),
    (["--threads", "0"], {}, "--threads takes a number of threads"),
    ([], {"CHARRNN_THREADS": "-3"}, "CHARRNN_THREADS takes a number of threads"),
])
def test_a_bad_thread_count_is_one_error_line(tmp_path, monkeypatch, args, env, fragment):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    text = tmp_path / "t.txt"
    text.write_text("abc abc abc\n", encoding="utf-8")
    for command in (["score", str(text)], ["sample"], ["train", str(text)], ["inspect"], ["sweep"]):
        result = CliRunner().invoke(main, [*command, *args])
        one_error_line(result, fragment)


def test_thread_count_follows_the_free_cores():
    assert threads.threads_for_load(0.1, cores=2) == 2
    assert threads.threads_for_load(0.9, cores=2) == 1  # a neighbour holds most of a core
    assert threads.threads_for_load(2.5, cores=2) == 1
    assert threads.threads_for_load(2.0, cores=8) == 6


def _clear_thread_env(monkeypatch):
    """No thread settings in the environment, and whatever prepare_process sets is undone afterwards."""
    for key in THREAD_ENV:
        monkeypatch.setenv(key, "")  # records the key's state, so what the test leaves is removed
        monkeypatch.delenv(key)
    # As in a fresh `charrnn` process, where the policy is chosen before torch loads; a quiet start
    # unless the test says otherwise.
    monkeypatch.setattr(threads, "_torch_loaded", lambda: False)
    monkeypatch.setattr(threads, "_loaded_at_start", lambda: False)


def _two_cores(monkeypatch, busy_elsewhere: float) -> list[int]:
    """A pretend 2-core machine where others keep `busy_elsewhere` cores busy (a loaded start from
    half a core); returns the torch thread counts set, in order, as prepare_process plans them."""
    _clear_thread_env(monkeypatch)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "other_load", lambda window=0.1: busy_elsewhere)
    monkeypatch.setattr(threads, "_loaded_at_start", lambda: busy_elsewhere >= threads.LOADED_AT_START)
    calls: list[int] = []
    monkeypatch.setattr(threads, "set_threads", lambda n, blas=None: calls.append(n))
    threads.prepare_process()
    return calls


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def auto_tuner(monkeypatch):
    """A StepTuner on a pretend 2-core machine, quiet at start, recording the counts it sets."""
    calls = _two_cores(monkeypatch, 0.0)
    clock = FakeClock()
    tuner = threads.StepTuner(period=10.0, max_period=40.0, trial_steps=3, warm_steps=1, settle_steps=2, clock=clock)
    feed(tuner, clock, 0.30, 2)  # the first steps of a run are slow (allocations) and not timed
    feed(tuner, clock, 0.10, 50)  # quiet at start: all cores, and no trial for a period (10 s)
    assert calls == [2] and tuner.trial is None
    clock.now += 5.0  # the period is over: the next step starts the first trial
    return tuner, calls, clock


def feed(tuner, clock, seconds, n):
    for _ in range(n):
        clock.now += seconds
        tuner.step_done(seconds)


def test_the_tuner_moves_to_one_thread_when_that_is_faster(auto_tuner):
    tuner, calls, clock = auto_tuner
    assert tuner.current == 2
    feed(tuner, clock, 0.10, 1)  # the period is over: the trial of 1 starts
    assert calls == [2, 1] and tuner.trial == 1
    feed(tuner, clock, 0.06, 4)  # a warm-up step and three faster ones: 1 thread wins
    assert tuner.current == 1 and tuner.trial is None and calls == [2, 1]
    feed(tuner, clock, 0.06, 20)  # steady: no new trial before the period is over
    assert calls == [2, 1]


def test_a_trial_that_is_hardly_faster_changes_nothing(auto_tuner):
    tuner, calls, clock = auto_tuner
    feed(tuner, clock, 0.10, 1)
    assert tuner.trial == 1
    feed(tuner, clock, 0.095, 4)  # 5% faster: within the noise of a shared machine, not worth a switch
    assert tuner.current == 2 and tuner.trial is None and calls == [2, 1, 2]


def test_slow_first_steps_do_not_start_a_trial_on_a_quiet_machine(auto_tuner):
    tuner, calls, clock = auto_tuner  # (the fixture's first steps were 3x slower, and no trial came)
    assert tuner.reference == pytest.approx(0.10)


def test_after_a_loaded_start_sleeping_threads_keep_every_core(monkeypatch):
    """Beside busy programs step times jump 2x from step to step, and a few steps of a trial chose
    one thread by chance (slower on average); with sleeping threads every core is best or close."""
    calls = _two_cores(monkeypatch, 2.0)  # neighbours hold both cores
    clock = FakeClock()
    tuner = threads.StepTuner(period=10.0, trial_steps=3, settle_steps=2, clock=clock)
    assert calls == [2] and not tuner.active  # PASSIVE: sleeping threads, every core
    for i in range(400):  # 40+ s of steps that jump between 0.1 and 0.25 s
        feed(tuner, clock, 0.25 if i % 7 < 3 else 0.10, 1)
    assert calls == [2]


def test_steps_that_speed_up_early_do_not_start_a_trial_before_the_period(monkeypatch):
    """A quiet run's first seconds get faster as allocations settle: that is not a neighbour."""
    calls = _two_cores(monkeypatch, 0.0)
    clock = FakeClock()
    tuner = threads.StepTuner(period=10.0, trial_steps=3, warm_steps=1, settle_steps=2, clock=clock)
    feed(tuner, clock, 0.30, 2)  # untimed
    feed(tuner, clock, 0.20, 5)  # still settling: this becomes the reference
    feed(tuner, clock, 0.10, 40)  # 2x faster than the reference: drift, but within the first period
    assert calls == [2] and tuner.trial is None
    feed(tuner, clock, 0.10, 60)
    assert calls[:2] == [2, 1]  # after the period, one thread is tried


def test_a_program_that_has_just_ended_is_not_a_loaded_start(monkeypatch):
    """/proc/stat still shows a process that just exited as busy; no task is runnable any more."""
    ticks = iter([(100.0, 0.0), (100.6, 0.0)])  # 0.6 core-seconds of someone's busy time in the window
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(ticks))
    monkeypatch.setattr(threads, "_own_cpu", lambda: 0.0)
    monkeypatch.setattr(threads, "START_PROBE", 0.01)
    monkeypatch.setattr(threads, "_runnable_others", lambda: 0)
    assert not threads._loaded_at_start()
    ticks = iter([(100.0, 0.0), (100.6, 0.0)])
    monkeypatch.setattr(threads, "_runnable_others", lambda: 1)  # a neighbour that keeps running
    assert threads._loaded_at_start()


def test_a_loaded_start_makes_idle_threads_sleep_and_keeps_blas_to_the_free_cores(monkeypatch):
    """Beside busy programs: OMP_WAIT_POLICY=PASSIVE; torch gets the free cores while there are
    any, and every core once others fill them all (sleeping threads take their share of the
    CPU), but NumPy's OpenBLAS, whose threads spin regardless, gets the free cores only. On a
    quiet start: a bounded spin, and every core for both."""
    _clear_thread_env(monkeypatch)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    calls: list[tuple[int, int | None]] = []
    monkeypatch.setattr(threads, "set_threads", lambda n, blas=None: calls.append((n, blas)))
    monkeypatch.setattr(threads, "_loaded_at_start", lambda: True)
    for busy_elsewhere, expected in ((1.1, (1, 1)), (1.9, (2, 1))):  # one core free; none free
        monkeypatch.setattr(threads, "other_load", lambda window=0.1, b=busy_elsewhere: b)
        calls.clear()
        plan = threads.prepare_process()
        assert plan.openmp_wait == "OMP_WAIT_POLICY=PASSIVE" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        assert "GOMP_SPINCOUNT" not in os.environ
        assert threads.apply() == expected[0] and calls == [expected]
    del os.environ["OMP_WAIT_POLICY"]
    monkeypatch.setattr(threads, "other_load", lambda window=0.1: 0.1)
    monkeypatch.setattr(threads, "_loaded_at_start", lambda: False)
    calls.clear()
    plan = threads.prepare_process()
    assert plan.openmp_wait == f"GOMP_SPINCOUNT={threads.SPIN_COUNT}" and "OMP_WAIT_POLICY" not in os.environ
    assert threads.apply() == 2 and calls == [(2, 2)]


def test_a_losing_trial_ends_early_and_the_checks_become_rarer(auto_tuner):
    tuner, calls, clock = auto_tuner
    feed(tuner, clock, 0.10, 1)
    assert tuner.trial == 1
    feed(tuner, clock, 0.50, 2)  # warm-up, then one step five times slower: the trial stops there
    assert tuner.trial is None and tuner.current == 2 and calls == [2, 1, 2]
    assert tuner.period == 20.0  # doubled
    feed(tuner, clock, 0.10, 100)  # 10 s later: not yet (the period is 20 s now)
    assert calls == [2, 1, 2]
    feed(tuner, clock, 0.10, 110)
    assert calls[:4] == [2, 1, 2, 1]  # re-checked after 20 s
    feed(tuner, clock, 0.10, 4)
    assert calls == [2, 1, 2, 1, 2]  # 1 thread is no faster: back to 2
    assert tuner.period == 40.0


def test_a_neighbour_arriving_triggers_a_check_at_once(auto_tuner):
    tuner, calls, clock = auto_tuner
    feed(tuner, clock, 0.10, 1)
    feed(tuner, clock, 0.50, 2)  # first trial lost
    n = len(calls)
    feed(tuner, clock, 0.10, 160)  # 16 s at the usual speed: past the minimum spacing, before the period
    assert len(calls) == n
    feed(tuner, clock, 0.25, 3)  # the steps become 2.5x slower: a neighbour came
    assert tuner.trial == 1 and len(calls) == n + 1


def test_a_fixed_count_is_never_tuned(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(threads, "set_threads", lambda n, blas=None: calls.append(n))
    threads.prepare_process("2")
    tuner = threads.StepTuner()
    for _ in range(50):
        tuner.step_done(0.1)
    assert not tuner.active and calls == [2]  # applied once, as asked


def test_training_reports_its_steps_to_the_tuner(monkeypatch, tmp_path, tiny_text, tiny_model_config,
                                                  tiny_train_config):
    """The trainer's loop drives the A/B: with an automatic plan the other count is tried."""
    from charrnn.train import train

    calls = _two_cores(monkeypatch, 0.0)  # a quiet start: threads spin briefly, and the count is re-checked
    events: list[dict] = []
    training = importlib.import_module("charrnn.train")  # (`charrnn.train` itself is the function)
    monkeypatch.setattr(training, "StepTuner", functools.partial(threads.StepTuner, period=0.0))  # no waiting
    train(tiny_text, tmp_path / "run", tiny_model_config, tiny_train_config.replace(max_steps=20), log=events.append)
    start = next(e for e in events if e["event"] == "start")
    assert start["threads"] == 2 and start["threads_auto"]
    assert calls[:2] == [2, 1]  # chosen at start, then the trial of one thread


def test_the_start_look_decides_whether_every_core_is_taken(monkeypatch):
    """Later measurements overlap torch's import, which takes CPU from the neighbours (beside 2 busy
    processes they read ~1.3 cores, and one thread was chosen: 7.5k chars/s against 10.2k)."""
    _clear_thread_env(monkeypatch)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    calls: list[tuple[int, int | None]] = []
    monkeypatch.setattr(threads, "set_threads", lambda n, blas=None: calls.append((n, blas)))
    monkeypatch.setattr(threads, "other_load", lambda window=0.1: 1.3)

    def look() -> bool:
        threads._start_load = 2.0  # both cores busy while this process slept
        return True

    monkeypatch.setattr(threads, "_loaded_at_start", look)
    threads.prepare_process()
    assert threads.apply() == 2 and calls == [(2, 1)]
    monkeypatch.delenv("OMP_WAIT_POLICY")
