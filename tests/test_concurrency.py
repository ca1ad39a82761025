"""Concurrent use: sampling from a run while it trains always reads a complete, consistent checkpoint.

A real training process saves best.pt, last.pt and meta.json at every step while this test loads
them and runs `charrnn sample` on the run in a loop. Each read must be whole (it loads) and
consistent (weights, optimizer state and metadata are from the same save).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from click.testing import CliRunner
from training_procs import TINY, Zygote, one_thread

from charrnn import checkpoint
from charrnn.cli import main

SAVES = 6  # distinct saves the reader must see while racing the writer


@pytest.fixture
def zygote(tmp_path):
    with Zygote(tmp_path / "cache") as z:
        yield z


def _consistent_last(ckpt) -> int:
    step = ckpt.meta["step"]
    assert ckpt.train_state["step"] == step
    assert ckpt.meta["history"]["step"][-1] == step  # last.pt is written after each evaluation
    adam_steps = {int(s["step"]) for s in ckpt.train_state["optimizer"]["state"].values()}
    assert adam_steps == {step}  # the optimizer tensors were saved with this metadata
    return step


def _consistent_best(ckpt) -> int:
    meta = ckpt.meta
    assert meta["step"] == meta["best_step"] and meta["history"]["step"][-1] == meta["step"]
    assert meta["best_val_loss"] == meta["history"]["val_loss"][-1] == min(
        v for v in meta["history"]["val_loss"] if v is not None)
    return meta["step"]


def test_sampling_while_training_reads_whole_consistent_checkpoints(zygote, tmp_path, text_file):
    run_dir = tmp_path / "run"
    argv = ["train", text_file, "--out", run_dir, "--max-steps", 1000, "--eval-interval", 1, *TINY]
    pid = zygote.start(argv, tmp_path, tmp_path / "train.log")
    deadline = time.monotonic() + 900  # only a starved machine gets near this
    while not (run_dir / "meta.json").exists():  # the first save writes best.pt, last.pt, then meta.json
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.01)
    seen_last, seen_best, samples, reads = [], [], 0, 0
    runner = CliRunner()
    with one_thread():
        while time.monotonic() < deadline:
            last = checkpoint.load(run_dir / "last.pt")
            best = checkpoint.load(run_dir)  # what `sample` picks in a run folder
            meta = checkpoint.read_meta(run_dir)
            reads += 3
            seen_last.append(_consistent_last(last))
            seen_best.append(_consistent_best(best))
            assert meta["history"]["step"][-1] == meta["step"]
            assert last.vocab == best.vocab
            result = runner.invoke(main, ["sample", "-c", str(run_dir), "-n", "20", "--seed", "7"])
            assert result.exit_code == 0, result.output
            assert "Traceback" not in result.output and len(result.stdout.rstrip("\n")) >= 20
            samples += 1
            if len(set(seen_last)) >= SAVES:
                break
    os.kill(pid, signal.SIGTERM)
    assert zygote.wait() == 143
    assert seen_last == sorted(seen_last) and seen_best == sorted(seen_best)  # never an older file
    assert len(set(seen_last)) >= SAVES, seen_last  # the reads really overlapped many writes
    print(f"{reads} checkpoint reads and {samples} samples during {len(set(seen_last))} distinct saves")
