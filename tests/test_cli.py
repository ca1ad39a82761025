import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import one_error_line

from charrnn.cli import main

TRAIN_FAST = ["--embed-dim", "8", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4",
              "--seq-len", "16", "--max-steps", "20", "--eval-interval", "10", "--device", "cpu",
              "--sample-length", "0", "--precision", "fp32"]


def run(args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)


def test_train_then_sample_on_a_small_slice(tmp_path, text_file):
    run_dir = tmp_path / "run"
    result = run(["train", text_file, "--out", run_dir, *TRAIN_FAST])
    assert result.exit_code == 0, result.output
    assert "best val loss" in result.output and "bits/char" in result.output
    assert (run_dir / "best.pt").exists()
    sample = run(["sample", "-c", run_dir, "-t", "0.5", "-n", "80", "--seed", "3", "--prime", "ROMEO:"])
    assert sample.exit_code == 0, sample.output
    assert sample.stdout.startswith("ROMEO:") and len(sample.stdout.rstrip("\n")) >= 80
    again = run(["sample", "-c", run_dir, "-t", "0.5", "-n", "80", "--seed", "3", "--prime", "ROMEO:"])
    assert again.stdout == sample.stdout
    greedy = run(["sample", "-c", run_dir, "--greedy", "-n", "40"])
    assert greedy.exit_code == 0


def test_sample_uses_the_most_recent_run(tmp_path, text_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(["train", text_file, *TRAIN_FAST]).exit_code == 0
    assert (tmp_path / "checkpoints" / "play" / "best.pt").exists()
    result = run(["sample", "-t", "0.5", "-n", "30", "--seed", "1"])
    assert result.exit_code == 0
    assert "using the most recent run: checkpoints/play" in result.stderr
    # training again never overwrites the earlier run
    assert run(["train", text_file, *TRAIN_FAST]).exit_code == 0
    assert (tmp_path / "checkpoints" / "play-2" / "best.pt").exists()


def test_resume_continues_the_run(tmp_path, text_file):
    run_dir = tmp_path / "run"
    assert run(["train", text_file, "--out", run_dir, *TRAIN_FAST]).exit_code == 0
    result = run(["train", text_file, "--resume", run_dir, "--max-steps", "30"])
    assert result.exit_code == 0, result.output
    assert "resuming at step 20" in result.output and "30 steps" in result.output


@pytest.mark.parametrize("setup, args, fragments", [
    (None, ["train", "{tmp}/missing.txt"], ["no such file"]),
    (None, ["train", "{tmp}/shakespeare.txt"], ["charrnn data get shakespeare"]),
    ("dir", ["train", "{tmp}/adir"], ["is a directory"]),
    ("empty", ["train", "{tmp}/empty.txt"], ["is empty"]),
    ("latin", ["train", "{tmp}/latin.txt"], ["not valid utf-8", "--encoding"]),
    ("binary", ["train", "{tmp}/blob.bin"], ["binary"]),
    ("short", ["train", "{tmp}/short.txt"], ["holds 1 character", "try --val-frac 0.2"]),
    (None, ["train", "{tmp}/x.txt", "--time-budget", "soon"], ["cannot read duration"]),
    (None, ["sample", "-c", "{tmp}/nowhere"], ["does not exist"]),
    ("corrupt", ["sample", "-c", "{tmp}/corrupt.pt"], ["not a readable charrnn checkpoint"]),
    ("run", ["sample", "-c", "{tmp}/run", "--prime", "Zq"], ["'Z'", "--unknown skip"]),
    ("run", ["sample", "-c", "{tmp}/run", "-t", "-1"], ["-1"]),
    ("run", ["sample", "-c", "{tmp}/run", "-n", "0"], ["--length must be at least 1"]),
    (None, ["data", "get", "wikipedia"], ["unknown corpus"]),
])
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, text_file, setup, args, fragments):
    if setup == "dir":
        (tmp_path / "adir").mkdir()
    elif setup == "empty":
        (tmp_path / "empty.txt").write_bytes(b"")
    elif setup == "latin":
        (tmp_path / "latin.txt").write_bytes("señor".encode("latin-1"))
    elif setup == "binary":
        (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    elif setup == "short":
        (tmp_path / "short.txt").write_text("too short\n")
    elif setup == "corrupt":
        (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 broken zip")
    elif setup == "run":
        assert run(["train", text_file, "--out", tmp_path / "run", *TRAIN_FAST]).exit_code == 0
    result = run([a.replace("{tmp}", str(tmp_path)) for a in args])
    one_error_line(result, *fragments)


def test_help_is_instant_and_does_not_import_torch():
    code = "import sys; from charrnn.cli import main; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
    result = run(["--help"])
    assert result.exit_code == 0 and "train" in result.output and "sample" in result.output


def test_top_level_help_gives_each_command_its_whole_first_sentence():
    result = run(["--help"])
    assert result.exit_code == 0
    listed = " ".join(result.output.split("Commands:")[1].split()).replace("- ", "-")  # wrapped at a hyphen
    assert "..." not in listed, listed  # click cut descriptions at the terminal's width with "..."
    for name, command in main.commands.items():
        first = command.get_short_help_str(limit=1_000_000)  # the first sentence, uncut
        assert first and f"{name} {first}" in listed, (name, first)


def test_data_get_help_lists_the_corpus_names_without_making_help_slow():
    from charrnn import corpora

    result = run(["data", "get", "--help"])
    assert result.exit_code == 0
    for name in corpora.CORPORA:
        assert name in result.output, result.output
    code = "import sys; from charrnn.cli import main; assert 'charrnn.corpora' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_epsilon_help_says_which_convention_it_follows():
    help_text = " ".join(run(["sample", "--help"]).output.split())
    assert "1 is greedy" in help_text and "the reverse of reinforcement learning's ε-greedy" in help_text


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "charrnn", "--version"], capture_output=True, text=True,
                         timeout=60, env={**os.environ})
    assert out.returncode == 0 and out.stdout.startswith("charrnn ")


def test_flags_override_the_preset_and_are_recorded(tmp_path, text_file):
    # A user tuning a preset must get exactly what they typed, and the checkpoint must say so.
    import json

    run_dir = tmp_path / "run"
    result = run(["train", text_file, "--preset", "cpu10", "--out", run_dir, *TRAIN_FAST,
                  "--lr", "0.004", "--min-lr-frac", "0.02", "--weight-decay", "0.05", "--dropout", "0.15",
                  "--weight-drop", "0.3"])
    assert result.exit_code == 0, result.output
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["train_config"]["lr"] == 0.004 and meta["train_config"]["min_lr_frac"] == 0.02
    assert meta["train_config"]["weight_decay"] == 0.05
    assert meta["model_config"]["dropout"] == 0.15 and meta["model_config"]["hidden_size"] == 16
    assert meta["model_config"]["weight_drop"] == 0.3
    assert meta["train_config"]["max_steps"] == 20 and meta["train_config"]["time_budget"] is None
