"""TOML configuration: preset < file < command line, --print-config, config.toml in every run folder."""

import json
import sys

import pytest
from click.testing import CliRunner
from conftest import one_error_line

from charrnn import config_file
from charrnn.cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SMALL = """
embed_dim = 8
hidden_size = 16
num_layers = 1
batch_size = 4
seq_len = 16
max_steps = 12
eval_interval = 6
sample_length = 0
device = "cpu"
precision = "fp32"
separator = "\\n\\\\--\\n"   # a newline, a backslash, two dashes, a newline: the text itself, unescaped
"""


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_print_config_layers_preset_then_file_then_options_and_creates_nothing(tmp_path, text_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    config = tmp_path / "my.toml"
    config.write_text(f'corpus = "{text_file.name}"\npreset = "cpu10"\nhidden_size = 48\nlr = 1e-3\n', encoding="utf-8")
    result = run(["train", "--config", config, "--print-config", "--lr", "5e-4", "--cache-dir", cache])
    assert result.exit_code == 0, result.output
    values = tomllib.loads(result.stdout)
    assert values["preset"] == "cpu10" and values["embed_dim"] == 64 and values["time_budget"] == 600.0  # the preset
    assert values["hidden_size"] == 48  # the file over the preset's 512
    assert values["lr"] == 5e-4  # the command line over the file
    assert values["corpus"] == [str(text_file.resolve())]
    assert "max_steps" not in values  # no limit: TOML has no null, a missing key means the same
    assert not (tmp_path / "checkpoints").exists() and not cache.exists()  # nothing read, nothing made
    # TEXT on the command line wins over the file's corpus
    other = tmp_path / "other.txt"
    other.write_text("x" * 100, encoding="utf-8")
    assert tomllib.loads(run(["train", other, "--config", config, "--print-config"]).stdout)["corpus"] == [str(other)]


def test_a_run_folders_config_toml_repeats_the_run(tmp_path, text_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "small.toml"
    config.write_text(SMALL, encoding="utf-8")
    act2 = tmp_path / "act2.txt"
    act2.write_text(text_file.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    first = run(["train", text_file, act2, "--config", config, "-q"])
    assert first.exit_code == 0, first.output
    saved = tmp_path / "checkpoints" / "play" / "config.toml"
    values = config_file.read(saved)
    assert values["separator"] == "\n\\--\n" and values["hidden_size"] == 16 and values["preset"] == "quick"
    assert values["corpus"] == [str(text_file.resolve()), str(act2.resolve())] and "out" not in values
    again = run(["train", "--config", saved, "-q"])  # from anywhere: the corpus path is absolute
    assert again.exit_code == 0, again.output
    metas = [json.loads((tmp_path / "checkpoints" / name / "meta.json").read_text()) for name in ("play", "play-2")]
    assert metas[0]["history"]["val_loss"] == metas[1]["history"]["val_loss"]  # the same run, step for step
    assert metas[0]["model_config"] == metas[1]["model_config"] and metas[0]["corpus"]["sha256"] == metas[1]["corpus"]["sha256"]
    assert config_file.read(tmp_path / "checkpoints" / "play-2" / "config.toml") == values


@pytest.mark.parametrize("content, fragments", [
    ("hiden_size = 32\n", ["hiden_size", "did you mean hidden_size"]),
    ('hidden_size = "big"\n', ["hidden_size", "integer"]),
    ("stateful = 1\n", ["stateful", "true or false"]),
    ("[model]\nhidden_size = 32\n", ["[model]", "flat"]),
    ("lr = 'fast'\n", ["lr", "a number"]),
    ("corpus = 3\n", ["corpus", "path"]),
    ("hidden_size = 0\n", ["hidden_size", "positive"]),
    ("hidden_size = \n", ["not valid TOML"]),
])
def test_bad_config_files_are_one_error_line_naming_the_key_and_the_file(tmp_path, text_file, content, fragments):
    config = tmp_path / "bad.toml"
    config.write_text(content, encoding="utf-8")
    one_error_line(run(["train", text_file, "--config", config, "--out", tmp_path / "run"]), str(config), *fragments)
    assert not (tmp_path / "run").exists()


def test_config_without_corpus_and_no_text_is_one_error_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("hidden_size = 16\n", encoding="utf-8")
    one_error_line(run(["train", "--config", config]), "TEXT")
    one_error_line(run(["train", "--config", tmp_path / "missing.toml"]), "missing.toml", "does not exist")


def test_config_file_carries_val_file_and_tensorboard_like_their_options(tmp_path, text_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    held_out = tmp_path / "held.txt"
    held_out.write_text("ROMEO:\nhello\n", encoding="utf-8")
    config = tmp_path / "c.toml"
    config.write_text(f'corpus = "{text_file.name}"\nval_file = "held.txt"\nval_unknown = "skip"\ntensorboard = true\n',
                      encoding="utf-8")
    values = tomllib.loads(run(["train", "--config", config, "--print-config"]).stdout)
    assert values["val_file"] == [str(held_out)] and values["val_unknown"] == "skip" and values["tensorboard"] is True
    elsewhere = tomllib.loads(run(["train", "--config", config, "--print-config", "--tensorboard", "tb"]).stdout)
    assert elsewhere["tensorboard"] == str(tmp_path / "tb")
    config.write_text('tensorboard = 3\n', encoding="utf-8")
    one_error_line(run(["train", text_file, "--config", config]), "tensorboard", "true, false or a folder")
