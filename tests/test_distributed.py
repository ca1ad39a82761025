"""Multi-process training (charrnn.distributed): a real 2-process torchrun run on CPU (gloo),
plus the sharding and resume rules checked without a process group."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli import main
from charrnn.config import TrainConfig
from charrnn.data import StreamBatcher
from charrnn.distributed import Distributed
from charrnn.errors import CharRNNError

VERSE = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
         "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo? ¡Ay, señor!\n\n")

FLAGS = ["--embed-dim", "16", "--hidden-size", "32", "--num-layers", "1", "--dropout", "0", "--batch-size", "8",
         "--seq-len", "16", "--max-steps", "40", "--eval-interval", "20", "--lr", "0.02", "--warmup-steps", "0",
         "--decay-steps", "60",
         "--device", "cpu", "--precision", "fp32", "--sample-length", "0", "--seed", "7"]


if "state_reset_prob" in TrainConfig.__dataclass_fields__:  # random restarts would draw per rank
    FLAGS += ["--state-reset-prob", "0"]


def _torchrun() -> list[str]:
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def _command(work, *args):
    """`torchrun --nproc_per_node 2 -m charrnn train corpus.txt ...` in `work` (gloo on the CPU)."""
    (work / "corpus.txt").write_text(VERSE * 36, encoding="utf-8")
    env = {**os.environ, "CHARRNN_CACHE_DIR": str(work / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "charrnn", "train", "corpus.txt", *args]
    return cmd, env


def _launch_two(work, *args):
    cmd, env = _command(work, *args)
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _rank_zero(launcher_pid):
    """The pid of the worker torchrun started with RANK=0."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"PPid:\t{launcher_pid}\n" not in status.read_text():
                continue
            environ = (status.parent / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"RANK=0" in environ:
            return int(status.parent.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank-0 worker through /proc")
def test_two_processes_train_one_model_into_one_folder(tmp_path):
    # A time budget (as the presets use) makes the learning rate follow the clock: the ranks must
    # share one clock, or their weights drift apart. The run is stopped by SIGTERM to rank 0 alone
    # once 30 steps are logged (so its length does not depend on the machine's load): rank 1 must
    # stop at the same step, take part in the last evaluation and save, and exit too.
    budget = [a for a in FLAGS if a not in ("--max-steps", "40", "--decay-steps", "60")]
    cmd, env = _command(tmp_path, *budget, "--time-budget", "30m", "--eval-interval", "10")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = tmp_path / "checkpoints" / "corpus" / "metrics.jsonl"
        deadline = time.monotonic() + 600
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 30):
            if proc.poll() is not None:
                raise AssertionError("the run ended early:\n" + proc.communicate()[1][-3000:])
            assert time.monotonic() < deadline, "no 30 steps in 10 minutes"
            time.sleep(0.2)
        rank0 = _rank_zero(proc.pid)
        assert rank0 is not None
        os.kill(rank0, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    runs = [p for p in (tmp_path / "checkpoints").iterdir()]
    assert [p.name for p in runs] == ["corpus"]  # both ranks agreed on one run folder (no --out)
    run = runs[0]
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == \
        ["best.pt", "config.toml", "last.pt", "losses.png", "meta.json", "metrics.jsonl"]
    assert stderr.count("done (SIGTERM)") == 1  # only rank 0 logs
    meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
    assert meta["train_config"]["time_budget"] == 1800.0 and meta["train_config"]["max_steps"] is None
    assert meta["step"] >= 30 and meta["history"]["step"][-1] == meta["step"]  # saved where it stopped
    # Both ranks hashed their own parameters at the last save: DDP kept them identical.
    job = meta["distributed"]
    assert job["world_size"] == 2 and job["backend"] == "gloo"
    assert len(job["param_sha256"]) == 2 and job["param_sha256"][0] == job["param_sha256"][1]
    val = meta["history"]["val_loss"]
    assert len(val) >= 3 and val[-1] < val[0] - 0.2  # the loss falls
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == list(range(1, meta["step"] + 1))  # one row per step
    # The checkpoint carries the state of all 8 streams (gathered from both ranks) and both RNGs.
    state = checkpoint.load(run / "last.pt").train_state
    assert state["hidden"][0].shape == (1, 8, 32)
    assert len(state["rank_rng"]) == 2


@pytest.mark.slow  # three torchrun launches (~15 s each on 2 busy cores); run with -m slow
def test_resume_on_one_or_two_processes_continues_a_two_process_run(tmp_path):
    _launch_two(tmp_path, *FLAGS, "--out", "two")
    shutil.copytree(tmp_path / "two", tmp_path / "one")
    corpus = tmp_path / "corpus.txt"
    _launch_two(tmp_path, "--resume", "two", "--max-steps", "60")  # rank 1 must not touch rank 0's files
    invoke = CliRunner().invoke
    resumed = invoke(main, ["train", str(corpus), "--resume", str(tmp_path / "one"), "--max-steps", "60"],
                     catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming at step 40" in resumed.output
    straight = invoke(main, ["train", str(corpus), "--out", str(tmp_path / "straight"), *FLAGS, "--max-steps", "60"],
                      catch_exceptions=False)
    assert straight.exit_code == 0, straight.output
    # Same global batch, data position, carried state and schedule (--decay-steps): with dropout off,
    # 40 steps on two processes + 20 on one (or two) equal 60 on one, up to float rounding.
    reference = checkpoint.load(tmp_path / "straight" / "last.pt").model.state_dict()
    for run in ("one", "two"):
        ckpt = checkpoint.load(tmp_path / run / "last.pt")
        assert ckpt.meta["step"] == 60
        for key, value in ckpt.model.state_dict().items():
            torch.testing.assert_close(value, reference[key], rtol=1e-4, atol=1e-5)


def test_ranks_train_disjoint_rows_that_together_are_the_global_batch():
    ids = np.arange(10_000) % 251
    whole = StreamBatcher.from_ids(ids, batch_size=8, seq_len=20, seed=1)
    shards = [Distributed(rank=r, world_size=4).shard(whole) for r in range(4)]
    for epoch, index in [(0, 0), (0, 5), (3, 2)]:
        x, y = whole.window(epoch, index)
        parts = [s.window(epoch, index) for s in shards]
        assert all(p[0].shape == (2, 20) for p in parts)
        torch.testing.assert_close(torch.cat([p[0] for p in parts]), x)
        torch.testing.assert_close(torch.cat([p[1] for p in parts]), y)
    # no two ranks hold the same stream (the streams are disjoint stretches of the text)
    starts = [int(s.streams[0, 0]) for s in shards]
    assert len(set(starts)) == 4
    assert all(np.shares_memory(s.streams, whole.streams) for s in shards)  # views, not copies


def test_batch_must_split_evenly_over_processes():
    with pytest.raises(CharRNNError, match="multiple of the 3 processes"):
        Distributed(rank=0, world_size=3).rows(8)


def test_hidden_state_rows_and_rng_on_resume():
    full = torch.arange(2 * 8 * 3, dtype=torch.float32).view(2, 8, 3)
    second = Distributed(rank=1, world_size=2)
    assert torch.equal(second.local_rows(full), full[:, 4:])
    state = {"rng": {"torch": "rank0"}, "rank_rng": [{"torch": "r0"}, {"torch": "r1"}]}
    assert second.rng_state_for_me(state) == {"torch": "r1"}
    # a rank that did not exist when the checkpoint was saved keeps its fresh seed
    assert Distributed(rank=2, world_size=4).rng_state_for_me(state) == {}
    # a single-process checkpoint resumed on several processes: rank 0 takes the saved state
    assert Distributed(rank=0, world_size=2).rng_state_for_me({"rng": {"torch": "only"}}) == {"torch": "only"}


def test_ddp_flag_without_torchrun_says_how_to_launch(tmp_path, text_file, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    result = CliRunner().invoke(main, ["train", str(text_file), "--ddp", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert "torchrun --nproc_per_node" in result.output and "Traceback" not in result.output


def test_world_size_without_a_launcher_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CharRNNError, match="launch with torchrun"):
        Distributed.from_env("cpu")
