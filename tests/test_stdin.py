"""`-` means standard input wherever a text is read: train, score, --prime-file, sweep --corpus."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import one_error_line

from charrnn.cli import main

TRAIN_FAST = ["--embed-dim", "8", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4",
              "--seq-len", "16", "--max-steps", "20", "--eval-interval", "10", "--device", "cpu",
              "--sample-length", "0", "--precision", "fp32"]


def run(args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run on a file, for the commands that read a model."""
    from conftest import VERSE

    root = tmp_path_factory.mktemp("stdin")
    corpus = root / "play.txt"
    corpus.write_text(VERSE * 36, encoding="utf-8")
    result = run(["train", corpus, "--out", root / "run", *TRAIN_FAST])
    assert result.exit_code == 0, result.output
    return root / "run", corpus


def test_score_reads_standard_input(trained):
    run_dir, corpus = trained
    from_file = run(["score", corpus, "-c", run_dir])
    piped = run(["score", "-", "-c", run_dir], input=corpus.read_bytes())
    assert piped.exit_code == 0, piped.output
    assert piped.stderr == "" and piped.stdout.startswith("<stdin>: ")
    assert piped.stdout.split("\n", 1)[1] == from_file.stdout.split("\n", 1)[1]  # the same figures
    # stdin in, per-character report out on stdout: the summary moves to stderr as before
    both = run(["score", "-", "-c", run_dir, "--per-char", "-"], input="ROMEO: wherefore")
    assert both.exit_code == 0 and both.stdout.startswith("position\t") and "<stdin>" in both.stderr


@pytest.mark.parametrize("command", ["sample", "inspect"])
def test_prime_file_dash_reads_standard_input(trained, command):
    run_dir, _ = trained
    prime = "ROMEO:\nBut soft"
    args = [command, "-c", run_dir, "-n", "20", "--seed", "4", "-t", "0.5"]
    piped = run([*args, "--prime-file", "-"], input=prime.encode())
    typed = run([*args, "--prime", prime])
    assert piped.exit_code == 0, piped.output
    assert piped.stdout == typed.stdout
    if command == "sample":
        assert piped.stdout.startswith(prime)


def test_train_reads_standard_input_and_records_it(tmp_path, monkeypatch, tiny_text):
    monkeypatch.chdir(tmp_path)
    result = run(["train", "-", *TRAIN_FAST], input=tiny_text.encode())
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "checkpoints" / "stdin"
    meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    assert meta["corpus"]["path"] == meta["corpus"]["name"] == "<stdin>"
    assert meta["corpus"]["sha256"] == hashlib.sha256(tiny_text.encode()).hexdigest()
    # Resuming reads the text again from standard input; a different text is noticed, as for a file.
    resumed = run(["train", "-", "--resume", run_dir, "--max-steps", "25"], input=tiny_text.encode())
    assert resumed.exit_code == 0, resumed.output
    assert "resuming at step 20" in resumed.output and "changed" not in resumed.output
    other = run(["train", "-", "--resume", run_dir, "--max-steps", "30"], input=tiny_text[::-1].encode())
    assert other.exit_code == 0 and "the corpus changed since this run was saved" in other.output
    # A sweep cannot find a piped corpus on disk: it says how to give it.
    one_error_line(run(["sweep", "-c", run_dir, "--out", tmp_path / "sw", "--length", "20"]),
                   "trained on standard input", "--corpus -")
    swept = run(["sweep", "-c", run_dir, "--out", tmp_path / "sw", "--corpus", "-", "--temperatures", "1",
                 "--no-greedy", "--num-samples", "1", "--length", "20"], input=tiny_text.encode())
    assert swept.exit_code == 0, swept.output
    assert json.loads((tmp_path / "sw" / "metrics.json").read_text(encoding="utf-8"))["source"]["corpus"] == "<stdin>"


def test_a_stdin_run_stopped_early_says_the_text_must_be_piped_again(tmp_path, monkeypatch, tiny_text):
    import importlib

    training = importlib.import_module("charrnn.train")  # the module the CLI calls (`charrnn.train` is the function)

    real = training.train

    def stopped(*args, **kwargs):  # the run as a Ctrl-C leaves it: saved, stop reason SIGINT
        result = real(*args, **kwargs)
        result.stop_reason = "SIGINT"
        return result

    monkeypatch.setattr(training, "train", stopped)
    result = run(["train", "-", "--out", tmp_path / "run", *TRAIN_FAST], input=tiny_text.encode())
    assert result.exit_code == 130
    hints = [line for line in result.stderr.splitlines() if "--resume" in line]
    assert hints == [f"stopped by SIGINT; the text came from standard input, so continue by giving it again: "
                     f"... | charrnn train - --resume {tmp_path / 'run'}"]


@pytest.mark.parametrize("args, fragments", [
    (["train", "-", "{tmp}/play.txt"], ["standard input", "cannot be joined"]),
    (["train", "-"], ["<stdin> is empty"]),
    (["score", "-"], ["<stdin> is empty"]),
])
def test_bad_standard_input_is_one_line(tmp_path, text_file, args, fragments):
    one_error_line(run([a.replace("{tmp}", str(tmp_path)) for a in args], input=b""), *fragments)


def test_standard_input_is_capped_like_any_pipe(trained, monkeypatch):
    from charrnn import data

    run_dir, corpus = trained
    monkeypatch.setattr(data, "MAX_STREAM_BYTES", 1000)  # the real cap is 256 MiB
    for args in (["score", "-", "-c", run_dir], ["train", "-", "--out", run_dir.parent / "capped", *TRAIN_FAST]):
        one_error_line(run(args, input=corpus.read_bytes()), "<stdin> is a pipe", "save the text to a file first")
    assert not (run_dir.parent / "capped").exists()


def test_train_from_a_real_pipe(tmp_path, tiny_text):
    """Through the operating system's pipe, as `cat play.txt | charrnn train -` runs it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "charrnn", "train", "-", "--out", str(tmp_path / "run"), *TRAIN_FAST],
                         input=tiny_text.encode(), capture_output=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    assert json.loads((tmp_path / "run" / "meta.json").read_text(encoding="utf-8"))["corpus"]["path"] == "<stdin>"
