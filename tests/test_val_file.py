"""--val-file: validation on separate files (the corpus is trained on whole), unknown characters
handled as `score --unknown` does, and the same validation after --resume."""

import json

import numpy as np
import torch
from click.testing import CliRunner
from conftest import one_error_line

from charrnn import load
from charrnn.cli import main
from charrnn.train import Trainer, evaluate, resume, val_streams
from charrnn.validation import ValidationFiles

FAST = ["--embed-dim", "8", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-len", "16",
        "--max-steps", "10", "--eval-interval", "5", "--device", "cpu", "--sample-length", "0", "--precision", "fp32",
        "--dropout", "0"]
HELD_OUT = "ROMEO:\nIt is my lady, O, it is my dear! ©\n\n"  # © is not in the training text


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _val_dir(tmp_path):
    folder = tmp_path / "held-out"
    folder.mkdir()
    (folder / "a.txt").write_text(HELD_OUT * 4, encoding="utf-8")
    (folder / "b.txt").write_text("JULIET:\nO Romeo, Romeo!\n\n" * 6, encoding="utf-8")
    return folder


def _val_loss(run_dir, text):
    ckpt = load(run_dir)
    ids = np.asarray(ckpt.vocab.encode(text, unknown="skip"))
    return evaluate(ckpt.model, val_streams(ids, 16), torch.device("cpu"))


def test_val_file_validates_on_the_files_skipping_unknown_characters_and_resume_keeps_them(tmp_path, text_file):
    folder = _val_dir(tmp_path)
    run_dir = tmp_path / "run"
    result = run(["train", text_file, "--out", run_dir, "--val-file", folder, "--val-unknown", "skip", *FAST])
    assert result.exit_code == 0, result.output
    assert "skipped 4 validation character(s)" in result.output, result.output  # four ©
    meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    assert meta["validation"]["files"] == [str((folder / "a.txt").resolve()), str((folder / "b.txt").resolve())]
    val_text = (folder / "a.txt").read_text(encoding="utf-8") + "\n\n" + (folder / "b.txt").read_text(encoding="utf-8")
    assert _val_loss(run_dir, val_text) == meta["best_val_loss"]  # scored on exactly that text
    resume(text_file.read_text(encoding="utf-8"), run_dir, max_steps=15)
    again = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    assert again["validation"] == meta["validation"] and again["history"]["step"][-1] == 15
    assert _val_loss(run_dir, val_text) == again["best_val_loss"]


def test_with_val_file_the_whole_corpus_trains(tmp_path, tiny_text, tiny_model_config, tiny_train_config):
    folder = _val_dir(tmp_path)
    split = Trainer(tiny_text, tmp_path / "a", tiny_model_config, tiny_train_config)
    whole = Trainer(tiny_text, tmp_path / "b", tiny_model_config, tiny_train_config,
                    validation=ValidationFiles.from_paths([folder / "b.txt"]))
    assert split.batcher.streams.size < 0.91 * len(tiny_text) < 0.99 * len(tiny_text) < whole.batcher.streams.size


def test_val_file_with_unknown_characters_is_refused_by_default_like_score(tmp_path, text_file):
    folder = _val_dir(tmp_path)
    line = one_error_line(run(["train", text_file, "--out", tmp_path / "run", "--val-file", folder / "a.txt", *FAST]),
                          "validation text", "1 character(s)", "©", "--val-unknown skip")
    assert line and not (tmp_path / "run" / "best.pt").exists()
    one_error_line(run(["train", text_file, "--val-file", folder, "--val-frac", "0.2", *FAST]), "--val-frac")
    one_error_line(run(["train", text_file, "--val-file", tmp_path / "nope.txt", *FAST]), "nope.txt")
