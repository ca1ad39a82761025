"""--tensorboard: the trainer's events written as TensorBoard scalars, texts and the loss figure,
read back with tensorboard's own EventAccumulator."""

import json
import math
import sys

import pytest
from click.testing import CliRunner
from conftest import one_error_line

from charrnn.cli import main

FAST = ["--embed-dim", "8", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-len", "16",
        "--eval-interval", "5", "--log-interval", "5", "--device", "cpu", "--sample-length", "24",
        "--precision", "fp32", "-q"]


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _events(folder):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the tensorboard extra is not installed: pip install -e '.[tensorboard]'")
    events = accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    events.Reload()
    return events


def test_tensorboard_logs_losses_lr_grad_norm_speed_samples_and_the_figure(tmp_path, text_file, monkeypatch):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tensorboard]'")
    run_dir = tmp_path / "run"
    result = run(["train", text_file, "--out", run_dir, "--tensorboard", "--max-steps", "10", *FAST])
    assert result.exit_code == 0, result.output
    events = _events(run_dir)  # into the run folder itself: tensorboard --logdir checkpoints shows it
    tags = events.Tags()
    assert {"train/loss_nats", "train/loss_bits", "train/lr", "train/grad_norm", "train/chars_per_sec",
            "val/loss_nats", "val/loss_bits"} <= set(tags["scalars"])
    meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    val = [(e.step, e.value) for e in events.Scalars("val/loss_nats")]
    assert [s for s, _ in val] == meta["history"]["step"] == [5, 10]
    assert [v for _, v in val] == pytest.approx(meta["history"]["val_loss"], rel=1e-6)
    bits = [e.value for e in events.Scalars("val/loss_bits")]
    assert bits == pytest.approx([v / math.log(2) for _, v in val], rel=1e-6)
    assert [e.step for e in events.Scalars("train/loss_nats")] == [5, 10]
    samples = events.Tensors("samples/text_summary")
    assert [s.step for s in samples] == [5, 10] and len(samples[0].tensor_proto.string_val[0]) >= 24
    assert events.Images("losses")[0].width > 100

    # resumed: the events continue in the same folder; a second --tensorboard DIR gets DIR/<run name>
    resumed = run(["train", text_file, "--resume", run_dir, "--max-steps", "15", "--tensorboard"])
    assert resumed.exit_code == 0, resumed.output
    assert [e.step for e in _events(run_dir).Scalars("val/loss_nats")] == [5, 10, 15]
    monkeypatch.chdir(tmp_path)  # the run folder by default: checkpoints/<corpus name>
    other = run(["train", text_file, "--max-steps", "5", "--tensorboard", "tb", *FAST])
    assert other.exit_code == 0, other.output
    assert [e.step for e in _events(tmp_path / "tb" / "play").Scalars("val/loss_nats")] == [5]


def test_tensorboard_without_the_package_is_one_error_line_saying_how_to_install(tmp_path, text_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    one_error_line(run(["train", text_file, "--out", tmp_path / "run", "--tensorboard", "--max-steps", "5", *FAST]),
                   "tensorboard", "pip install")
    assert not (tmp_path / "run").exists()


def test_tensorboard_before_text_says_it_took_text_as_its_folder(text_file):
    one_error_line(run(["train", "--tensorboard", text_file, "--max-steps", "5"]), "--tensorboard took", "before")
