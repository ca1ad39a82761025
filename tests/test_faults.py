"""Faults lose nothing: signals, kill -9 (also in the middle of a checkpoint write), failed writes,
diverging losses. Real training processes are killed; what they leave behind must load and resume.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from training_procs import TINY, Zygote, child_env, metric_rows, one_thread, wait_for

from charrnn import atomic, checkpoint
from charrnn.cli import main
from charrnn.errors import CharRNNError


def cli(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    return errors[0]


def temp_files(run_dir):
    return sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".tmp"))


def stamp(path):
    return path.stat().st_mtime_ns if path.exists() else None


def losses(run_dir) -> list[tuple[int, float]]:
    return [(row["step"], row["loss"]) for row in metric_rows(run_dir)]


def assert_same_parameters(run_a, run_b):
    a = checkpoint.load(run_a / "last.pt").model.state_dict()
    b = checkpoint.load(run_b / "last.pt").model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def straight_run(text_file, run_dir, steps):
    """The uninterrupted reference. Evaluation consumes no randomness, so evaluating less often
    leaves the per-step losses and the final weights unchanged; it only makes this cheaper."""
    result = cli(["train", text_file, "--out", run_dir, "--max-steps", steps, "--eval-interval", 1000, *TINY])
    assert result.exit_code == 0, result.output
    return losses(run_dir)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    with Zygote(tmp_path_factory.mktemp("zygote-cache")) as z:
        yield z


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_resumable_checkpoint_and_resume_matches_a_straight_run(zygote, tmp_path, text_file, sig):
    run_dir = tmp_path / "run"
    argv = ["train", text_file, "--out", run_dir, "--max-steps", 12, "--eval-interval", 4, *TINY]
    log = tmp_path / "train.log"
    if sig == signal.SIGTERM:  # the real console entry point, as a scheduler would stop it
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "charrnn", *map(str, argv)], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=tmp_path, env=child_env())
            wait_for(lambda: len(metric_rows(run_dir)) >= 2, what="training to start")
            proc.send_signal(sig)
            code = proc.wait(timeout=900)
    else:  # Ctrl-C, in a forked copy of the CLI
        pid = zygote.start(argv, tmp_path, log)
        wait_for(lambda: len(metric_rows(run_dir)) >= 2, what="training to start")
        os.kill(pid, sig)
        code = zygote.wait()
    output = log.read_text()
    assert code == 128 + sig, output  # documented: 130 for SIGINT, 143 for SIGTERM
    assert "Traceback" not in output
    # The command printed names the run's own corpus (not a placeholder) and continues it as written.
    command = f"charrnn train {text_file} --resume {run_dir}"
    assert f"stopped by {sig.name}; continue with: {command}\n" in output
    last = checkpoint.load(run_dir, prefer="last.pt")
    stopped_at = last.meta["step"]
    assert 2 <= stopped_at < 12 and last.train_state["step"] == stopped_at
    assert last.meta["history"]["step"][-1] == stopped_at  # evaluated and saved on the way out

    resumed = cli([*shlex.split(command)[1:], "--max-steps", 12])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming at step {stopped_at}" in resumed.output
    assert losses(run_dir) == straight_run(text_file, tmp_path / "straight", 12)
    assert_same_parameters(run_dir, tmp_path / "straight")


@pytest.mark.parametrize("started", ["from a terminal", "as a script's background job"])
def test_a_second_ctrl_c_stops_at_once_even_mid_save_and_keeps_the_last_save(zygote, tmp_path, text_file, started):
    # A script's `charrnn train ... &` starts with SIGINT ignored; `kill -INT` must still mean the same.
    run_dir = tmp_path / "run"
    assert cli(["train", text_file, "--out", run_dir, "--max-steps", 2, "--eval-interval", 2, *TINY]).exit_code == 0
    saved = (run_dir / "last.pt").read_bytes()
    # Resume with no evaluation due: after the first Ctrl-C the only checkpoint writes are the final
    # save's, and the first of them hangs on a slow disk until the second Ctrl-C.
    stalled = tmp_path / "stalled"
    argv = ["train", text_file, "--resume", run_dir, "--max-steps", 10**6, "--eval-interval", 10**6]
    pid = zygote.start(argv, tmp_path, tmp_path / "train.log", stall_marker=stalled,
                       sigint_ignored=started != "from a terminal")
    wait_for(lambda: len(metric_rows(run_dir)) >= 4, what="training to resume")
    os.kill(pid, signal.SIGINT)  # "stop at the next step boundary": the final evaluation and save follow
    wait_for(stalled.exists, what="the final save to reach the disk")
    os.kill(pid, signal.SIGINT)  # "no, now": lands inside that write
    assert zygote.wait() == 130
    output = (tmp_path / "train.log").read_text()
    assert "evaluating and saving" in output  # the first Ctrl-C was answered at once
    assert "interrupted" in output and "Traceback" not in output, output
    assert "the stalled fsync finished" not in output  # it stopped at once, not when the disk let it
    assert temp_files(run_dir) == []  # the interrupted write cleaned up after itself
    assert (run_dir / "last.pt").read_bytes() == saved  # the last complete save, untouched
    assert checkpoint.load(run_dir / "last.pt").meta["step"] == 2
    assert checkpoint.load(run_dir / "best.pt").meta["step"] == 2


def test_ctrl_c_twice_inside_the_checkpoint_serialisation_exits_cleanly(zygote, tmp_path, text_file):
    # torch's zip writer calls back into Python for every write; an exception raised inside one of
    # those calls used to abort the process ("terminate called ...") or end in a RuntimeError
    # traceback. Here both Ctrl-Cs land inside the serialisation of the second checkpoint file.
    run_dir = tmp_path / "run"
    argv = ["train", text_file, "--out", run_dir, "--max-steps", 100, "--eval-interval", 2, *TINY]
    zygote.start(argv, tmp_path, tmp_path / "train.log", ctrl_c_twice_on_save=2)
    code = zygote.wait()
    output = (tmp_path / "train.log").read_text()
    assert code == 130, output
    assert "interrupted" in output and "Traceback" not in output and "terminate" not in output, output
    assert temp_files(run_dir) == []
    first = checkpoint.load(run_dir / "best.pt")  # written whole before the interrupted one began
    assert first.meta["step"] == 2
    assert not (run_dir / "last.pt").exists()  # the interrupted write left nothing half-done behind


def test_kill_9_at_random_moments_always_leaves_a_loadable_checkpoint(zygote, tmp_path, text_file):
    # Evaluate and save at every step so that writes are frequent; kill at seeded random delays.
    run_dir = tmp_path / "run"
    rng = random.Random(20240606)
    kills, saved_step = 5, 0
    for attempt in range(kills):
        if attempt == 0:
            argv = ["train", text_file, "--out", run_dir, "--max-steps", 1000, "--eval-interval", 1, *TINY]
        else:
            argv = ["train", text_file, "--resume", run_dir, "--max-steps", 1000]
        before = stamp(run_dir / "last.pt")
        zygote.start(argv, tmp_path, tmp_path / f"kill{attempt}.log")
        # Wait until this process has trained and saved past the checkpoint it started from.
        wait_for(lambda: stamp(run_dir / "last.pt") != before, what="training progress")  # noqa: B023
        time.sleep(rng.uniform(0.0, 0.6))  # then a random moment: a step, an evaluation, a write...
        os.kill(zygote.pid, signal.SIGKILL)
        assert zygote.wait() == -signal.SIGKILL
        last = checkpoint.load(run_dir / "last.pt")  # whatever the moment, the files load
        best = checkpoint.load(run_dir / "best.pt")
        assert last.meta["step"] >= saved_step and last.meta["history"]["step"][-1] == last.meta["step"]
        # best.pt is written before last.pt, so a kill between the two leaves best one evaluation ahead:
        # never behind it, and never a best.pt that contradicts itself.
        assert best.meta["step"] == best.meta["best_step"]
        assert checkpoint.read_meta(run_dir)["step"] >= saved_step
        saved_step = last.meta["step"]
    final = saved_step + 3
    resumed = cli(["train", text_file, "--resume", run_dir, "--max-steps", final])
    assert resumed.exit_code == 0, resumed.output
    assert temp_files(run_dir) == []  # half-written files of killed runs are cleaned up
    steps = [step for step, _ in losses(run_dir)]
    assert steps == list(range(1, final + 1))  # no gap, no duplicate: rows after the checkpoint were dropped
    # Nothing was lost: the killed-and-resumed run is the run that was never interrupted.
    assert losses(run_dir) == straight_run(text_file, tmp_path / "straight", final)
    assert_same_parameters(run_dir, tmp_path / "straight")


def test_kill_in_the_middle_of_a_checkpoint_write(zygote, tmp_path, text_file):
    run_dir = tmp_path / "run"
    argv = ["train", text_file, "--out", run_dir, "--max-steps", 100, "--eval-interval", 1, *TINY]
    zygote.start(argv, tmp_path, tmp_path / "train.log", kill_on_save=4)  # 4th checkpoint write
    assert zygote.wait() == -signal.SIGKILL
    torn = temp_files(run_dir)
    assert len(torn) == 1 and torn[0].startswith((".best.pt.", ".last.pt.")), torn  # killed mid-write
    assert (run_dir / torn[0]).stat().st_size > 0
    last = checkpoint.load(run_dir / "last.pt")
    assert checkpoint.load(run_dir / "best.pt").meta["step"] >= 1 and last.meta["step"] >= 1
    resumed = cli(["train", text_file, "--resume", run_dir, "--max-steps", last.meta["step"] + 2])
    assert resumed.exit_code == 0, resumed.output
    assert temp_files(run_dir) == []
    assert checkpoint.load(run_dir / "last.pt").meta["step"] == last.meta["step"] + 2


def _fail_torch_save_after_half(monkeypatch):
    real = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 the first bytes")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    return real


@pytest.mark.parametrize("fault, reason", [
    ("disk full", "No space left on device"),
    ("read-only folder", "Read-only file system"),
    ("rename refused", "Input/output error"),
])
def test_failed_write_reports_the_error_and_keeps_the_previous_checkpoint(tmp_path, text_file, monkeypatch,
                                                                         fault, reason):
    run_dir = tmp_path / "run"
    assert cli(["train", text_file, "--out", run_dir, "--max-steps", 4, "--eval-interval", 2, *TINY]).exit_code == 0
    before = {name: (run_dir / name).read_bytes() for name in ("best.pt", "last.pt", "meta.json")}
    # Each fault hits the checkpoint files only, so the resume gets as far as saving at step 6 (the
    # metrics.jsonl rewrite at the start of a resume uses the same writer and would fail first).
    if fault == "disk full":
        _fail_torch_save_after_half(monkeypatch)
    elif fault == "read-only folder":  # root ignores chmod, so refuse the way a read-only mount does
        real_open = atomic.os.open

        def refuse(path, flags, *args, **kwargs):
            if flags & os.O_CREAT and os.path.basename(path).startswith((".best.pt", ".last.pt")):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kwargs)
        monkeypatch.setattr(atomic.os, "open", refuse)
    else:
        real_replace = atomic.os.replace

        def refuse_rename(src, dst):
            if str(dst).endswith(".pt"):
                raise OSError(errno.EIO, os.strerror(errno.EIO), str(src))
            return real_replace(src, dst)
        monkeypatch.setattr(atomic.os, "replace", refuse_rename)
    line = error_line(cli(["train", text_file, "--resume", run_dir, "--max-steps", 8]))
    assert reason in line and "could not write checkpoint" in line and "the previous checkpoint is unchanged" in line
    assert str(run_dir) in line and ".tmp" not in line  # the user's file, not our temporary name
    monkeypatch.undo()
    for name, data in before.items():
        assert (run_dir / name).read_bytes() == data, name  # the previous files, byte for byte
    assert temp_files(run_dir) == []
    assert checkpoint.load(run_dir / "last.pt").meta["step"] == 4
    # and the run still continues once the disk is fine again
    assert cli(["train", text_file, "--resume", run_dir, "--max-steps", 6]).exit_code == 0


def test_a_full_disk_while_logging_steps_names_the_file_and_keeps_the_checkpoints(zygote, tmp_path, text_file):
    run_dir = tmp_path / "run"
    zygote.start(["train", text_file, "--out", run_dir, "--max-steps", 4, "--eval-interval", 2, *TINY], tmp_path,
                 tmp_path / "first.log")  # in the children's corpus cache, so the limited run only trains
    assert zygote.wait() == 0
    before = {name: (run_dir / name).read_bytes() for name in ("best.pt", "last.pt", "meta.json")}
    # metrics.jsonl may grow by ~60 rows, then every write past that fails (a real EFBIG from the kernel)
    limit = (run_dir / "metrics.jsonl").stat().st_size + 4000
    argv = ["train", text_file, "--resume", run_dir, "--max-steps", 10**6, "--eval-interval", 10**6, "-q"]
    zygote.start(argv, tmp_path, tmp_path / "train.log", file_size_limit=limit)  # -q: the log is limited too
    assert zygote.wait() == 1
    output = (tmp_path / "train.log").read_text()
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    assert f"could not write {run_dir / 'metrics.jsonl'}: File too large" in errors[0]
    assert "checkpoints are unchanged" in errors[0]
    for name, data in before.items():
        assert (run_dir / name).read_bytes() == data, name
    assert cli(["train", text_file, "--resume", run_dir, "--max-steps", 6]).exit_code == 0  # room again: it goes on
    assert [step for step, _ in losses(run_dir)] == list(range(1, 7))


def test_a_full_disk_while_encoding_the_corpus_names_the_cache_and_the_way_out(zygote, tmp_path, text_file):
    cache = tmp_path / "cache"
    argv = ["train", text_file, "--out", tmp_path / "run", "--cache-dir", cache, *TINY, "--max-steps", 2, "-q"]
    zygote.start(argv, tmp_path, tmp_path / "train.log", file_size_limit=2000)  # the ids take ~6 kB
    assert zygote.wait() == 1
    output = (tmp_path / "train.log").read_text()
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert "Traceback" not in output and len(errors) == 1, output
    assert f"could not write the encoded corpus {cache}" in errors[0] and "File too large" in errors[0]
    assert "--cache-dir" in errors[0]
    assert not list(cache.rglob("*.tmp"))  # the half-written id file is gone


def test_exploding_loss_names_the_kept_checkpoint(tmp_path, text_file, monkeypatch):
    from charrnn.train import Trainer

    run_dir = tmp_path / "run"
    assert cli(["train", text_file, "--out", run_dir, "--max-steps", 4, "--eval-interval", 2, *TINY]).exit_code == 0
    best_before = (run_dir / "best.pt").read_bytes()
    real_step = Trainer.train_step

    def diverging_step(self):
        result = real_step(self)
        return dataclasses.replace(result, loss=1e6) if self.step == 6 else result

    monkeypatch.setattr(Trainer, "train_step", diverging_step)
    line = error_line(cli(["train", text_file, "--resume", run_dir, "--max-steps", 10]))
    assert "exploded to 1000000.000" in line and "at step 6" in line and "--lr" in line
    assert line.endswith(f"the last good checkpoint is kept at {run_dir / 'best.pt'}")
    assert (run_dir / "best.pt").read_bytes() == best_before
    assert checkpoint.load(run_dir / "last.pt").meta["step"] == 4  # still resumable


def test_weights_broken_by_an_update_are_never_saved(tmp_path, tiny_text, tiny_model_config, tiny_train_config,
                                                     monkeypatch):
    # The loss of step 4 is finite, but the update after it leaves NaN weights; the evaluation at
    # step 4 must stop training instead of saving them over the good last.pt of step 2.
    from charrnn.train import Trainer

    trainer = Trainer(tiny_text, tmp_path / "run", tiny_model_config,
                      tiny_train_config.replace(max_steps=10, eval_interval=2))
    real_step = Trainer.train_step

    def breaking_step(self):
        loss = real_step(self)
        if self.step == 4:
            with torch.no_grad():
                self.model.head.weight.fill_(float("nan"))
        return loss

    monkeypatch.setattr(Trainer, "train_step", breaking_step)
    with pytest.raises(CharRNNError, match=r"validation loss became nan at step 4.*kept at .*best\.pt"):
        trainer.run()
    assert checkpoint.load(tmp_path / "run" / "last.pt").meta["step"] == 2
