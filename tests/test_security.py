"""Untrusted checkpoints are harmless: nothing in them runs, and their metadata is checked (types,
sizes, vocabulary against the weights' shapes, the training state) before any tensor is used.

Every path that opens a checkpoint is tried: `sample`, `inspect`, `score`, `sweep`,
`train --resume` and `train --init-from`.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from click.testing import CliRunner
from conftest import one_error_line
from training_procs import one_thread

from charrnn import checkpoint
from charrnn.cli import main
from charrnn.errors import CharRNNError

TRAIN_FAST = ["--embed-dim", "8", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4",
              "--seq-len", "16", "--max-steps", "4", "--eval-interval", "2", "--device", "cpu",
              "--sample-length", "0", "--precision", "fp32"]
# Fine-tuning keeps the trained architecture, so it takes only the run-limit flags.
FINE_TUNE_FAST = TRAIN_FAST[6:]


def invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: a second thread only adds waiting on a busy machine."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from conftest import VERSE

    root = tmp_path_factory.mktemp("security")
    (root / "play.txt").write_text(VERSE * 36, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_CACHE_DIR", str(root / "cache"))
        result = invoke(["train", root / "play.txt", "--out", root / "run", *TRAIN_FAST])
    assert result.exit_code == 0, result.output
    return root


# ------------------------------------------------------------------------------------------------
# Code execution


class _RunsCode:
    """Unpickling this executes `code` (what a malicious checkpoint would do)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def _evil_files(folder, marker):
    """Several ways to smuggle the payload: inside the metadata, as the whole file, as weights,
    inside the training state, and as raw pickles of protocol 0 and 2."""
    code = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('the payload ran')"
    evil = _RunsCode(code)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, payload in {
        "in-meta": {"format_version": 1, "meta": evil, "model": {}},
        "whole": evil,
        "in-weights": {"format_version": 1, "meta": {}, "model": {"embed.weight": evil}},
        "in-train-state": {"format_version": 1, "meta": {}, "model": {}, "train_state": evil},
    }.items():
        path = folder / f"{name}.pt"
        torch.save(payload, path)
        files[name] = path
    for protocol in (0, 2):
        path = folder / f"raw-pickle-{protocol}.pt"
        path.write_bytes(pickle.dumps(evil, protocol=protocol))
        files[f"raw-{protocol}"] = path
    return files


def test_crafted_pickle_never_runs_through_the_library(tmp_path):
    marker = tmp_path / "pwned"
    for name, path in _evil_files(tmp_path / "evil", marker).items():
        with pytest.raises(CharRNNError):
            checkpoint.load(path)
        assert not marker.exists(), f"the payload ran from {name}"
    # the payload is real: unpickling it without weights_only does run it
    pickle.loads(pickle.dumps(_RunsCode(f"import pathlib; pathlib.Path({str(marker)!r}).write_text('x')")))
    assert marker.exists()


@pytest.mark.parametrize("command", [
    ["sample", "-c", "{evil}", "-n", "5"],
    ["inspect", "-c", "{evil}", "-n", "5"],
    ["score", "-c", "{evil}", "{root}/play.txt"],
    ["sweep", "-c", "{evil}", "--out", "{root}/sweep-out", "--length", "5", "--num-samples", "1"],
    ["train", "{root}/play.txt", "--init-from", "{evil}", "--out", "{root}/ft", *FINE_TUNE_FAST],
    ["train", "{root}/play.txt", "--resume", "{evil_dir}"],
], ids=["sample", "inspect", "score", "sweep", "init-from", "resume"])
def test_crafted_pickle_never_runs_through_any_command(work, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    for name, path in _evil_files(tmp_path / "evil", marker).items():
        run_dir = tmp_path / f"evil-run-{name}"  # what `sample -c DIR` and `--resume DIR` open
        run_dir.mkdir()
        (run_dir / "best.pt").write_bytes(path.read_bytes())
        (run_dir / "last.pt").write_bytes(path.read_bytes())
        args = [a.replace("{evil_dir}", str(run_dir)).replace("{evil}", str(path)).replace("{root}", str(work))
                for a in command]
        line = one_error_line(invoke(args))
        assert str(path.name) in line or str(run_dir) in line, line
        assert not marker.exists(), f"the payload ran from {name} via {command[0]}"


# ------------------------------------------------------------------------------------------------
# Metadata and weights


def _set(path, value):
    """A mutation that sets payload[path[0]][path[1]]... = value."""
    def change(payload):
        target = payload
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _drop(path):
    def change(payload):
        target = payload
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


HUGE = {"vocab_size": 45, "model": "lstm", "embed_dim": 65536, "hidden_size": 65536, "num_layers": 1,
        "dropout": 0.0, "tie_weights": False}

META_CASES = [
    ("payload without meta or weights", lambda p: p.clear() or p.update({"x": [1, 2]}), "not a charrnn checkpoint"),
    ("format_version a string", _set(["format_version"], "1"), "bad format_version"),
    ("format_version negative", _set(["format_version"], -3), "bad format_version"),
    ("meta not a mapping", _set(["meta"], [1, 2, 3]), "metadata is not a mapping"),
    ("model_config missing", _drop(["meta", "model_config"]), "model_config must be a mapping"),
    ("hidden_size a string", _set(["meta", "model_config", "hidden_size"], "16"), "hidden_size must be a positive integer"),
    ("hidden_size a bool", _set(["meta", "model_config", "hidden_size"], True), "hidden_size must be a positive integer"),
    ("num_layers negative", _set(["meta", "model_config", "num_layers"], -1), "num_layers must be a positive integer"),
    ("unknown model type", _set(["meta", "model_config", "model"], "transformer"), "model must be one of"),
    ("unknown config key", _set(["meta", "model_config", "exec"], "rm -rf /"), "unknown key(s): exec"),
    ("dropout out of range", _set(["meta", "model_config", "dropout"], 7.0), "dropout must be in [0, 1)"),
    ("vocab missing", _drop(["meta", "vocab"]), "vocabulary is missing"),
    ("vocab a string", _set(["meta", "vocab"], "abc"), "vocabulary is missing or not a list"),
    ("vocab of numbers", _set(["meta", "vocab"], list(range(45))), "vocabulary is missing or not a list"),
    ("vocab multi-char entry", lambda p: p["meta"]["vocab"].__setitem__(0, "ab"), "single characters"),
    ("vocab duplicates", lambda p: p["meta"]["vocab"].__setitem__(1, p["meta"]["vocab"][2]), "duplicate"),
    ("vocab lone surrogate", lambda p: p["meta"]["vocab"].__setitem__(0, "\ud800"), "surrogates"),
    ("vocab shorter than the model", lambda p: p["meta"]["vocab"].pop(), "vocabulary has 44 characters but the model expects 45"),
    ("vocab and config agree, weights do not",
     lambda p: (p["meta"]["vocab"].append("\u2603"), p["meta"]["model_config"].__setitem__("vocab_size", 46)),
     "weight embed.weight has shape (45, 8), expected (46, 8)"),
    ("weights missing", _drop(["model"]), "not a charrnn checkpoint"),
    ("a weight missing", _drop(["model", "head.bias"]), "missing ['head.bias']"),
    ("an unexpected weight", _set(["model", "backdoor"], torch.zeros(1)), "unexpected ['backdoor']"),
    ("weight not a tensor", _set(["model", "head.bias"], [0.0] * 45), "weight head.bias has shape list"),
    ("integer weights", _set(["model", "head.bias"], torch.zeros(45, dtype=torch.int64)), "not finite floating-point"),
    ("NaN weights", _set(["model", "head.bias"], torch.full((45,), float("nan"))), "not finite floating-point"),
    ("huge model claimed, tiny weights", _set(["meta", "model_config"], HUGE), "has shape"),
]

# The record of the training text reaches file-system calls in `sweep` (and is carried on by a resume).
CORPUS_CASES = [
    ("corpus a string", _set(["meta", "corpus"], "play.txt"), "corpus must be a mapping, got str"),
    ("corpus path a number", _set(["meta", "corpus", "path"], 123), "corpus path must be a string, got int"),
    ("corpus path a list", _set(["meta", "corpus", "path"], ["play.txt"]), "corpus path must be a string, got list"),
    ("corpus inputs a number", _set(["meta", "corpus", "inputs"], 5), "corpus inputs must be a list of file paths"),
    ("corpus inputs of numbers", _set(["meta", "corpus", "inputs"], [1, 2]), "corpus inputs must be a list"),
    ("corpus name a number", _set(["meta", "corpus", "name"], 7), "corpus name must be a string, got int"),
    ("corpus sha256 a list", _set(["meta", "corpus", "sha256"], ["ab"]), "corpus sha256 must be a string"),
]
META_CASES += CORPUS_CASES


def _crafted(work, tmp_path, change, name="last.pt"):
    payload = torch.load(work / "run" / "last.pt", weights_only=True)
    payload = copy.deepcopy(payload)
    change(payload)
    run_dir = tmp_path / "crafted"
    run_dir.mkdir(exist_ok=True)
    for file in ("best.pt", "last.pt"):
        torch.save(payload, run_dir / file)
    return run_dir


@pytest.mark.parametrize("case, change, fragment", META_CASES, ids=[c[0] for c in META_CASES])
def test_crafted_metadata_is_refused_before_any_tensor_is_used(work, tmp_path, monkeypatch, case, change, fragment):
    run_dir = _crafted(work, tmp_path, change)
    built = []
    real_model = checkpoint.CharRNN

    def spy(config):
        # a model with real storage is built only once the weights are known to fit the metadata
        built.append((config, torch.empty(0).device.type))
        return real_model(config)

    monkeypatch.setattr(checkpoint, "CharRNN", spy)
    with pytest.raises(CharRNNError) as info:
        checkpoint.load(run_dir)
    assert fragment in str(info.value), str(info.value)
    assert all(device == "meta" for _, device in built), built  # nothing allocated for a bad file
    line = one_error_line(invoke(["sample", "-c", run_dir, "-n", "5"]))
    assert fragment in line


@pytest.mark.parametrize("command", [
    ["inspect", "-c", "{run}", "-n", "5"],
    ["score", "-c", "{run}", "{root}/play.txt"],
    ["sweep", "-c", "{run}", "--out", "{tmp}/sweep-out", "--length", "5", "--num-samples", "1", "--temperatures", "1"],
    ["sweep", "-c", "{run}", "--out", "{tmp}/sweep-out", "--length", "5", "--num-samples", "1", "--temperatures", "1",
     "--corpus", "{root}/play.txt"],
    ["train", "{root}/play.txt", "--init-from", "{run}", "--out", "{tmp}/ft", *FINE_TUNE_FAST],
    ["train", "{root}/play.txt", "--resume", "{run}", "--max-steps", "8"],
], ids=["inspect", "score", "sweep", "sweep-corpus", "init-from", "resume"])
@pytest.mark.parametrize("case, change, fragment", CORPUS_CASES, ids=[c[0] for c in CORPUS_CASES])
def test_a_forged_corpus_record_is_one_error_line_in_every_command(work, tmp_path, case, change, fragment, command):
    run_dir = _crafted(work, tmp_path, change)
    args = [a.replace("{run}", str(run_dir)).replace("{root}", str(work)).replace("{tmp}", str(tmp_path))
            for a in command]
    one_error_line(invoke(args), fragment)


def test_a_checkpoint_without_a_corpus_record_still_works(work, tmp_path):
    """An absent or null record is "not recorded", not forged: sampling works and sweep asks for --corpus."""
    for record in ("absent", None):
        def change(payload, record=record):
            del payload["train_state"]  # like best.pt, or a checkpoint.save without a training state
            if record == "absent":
                del payload["meta"]["corpus"]
            else:
                payload["meta"]["corpus"] = record
        run_dir = _crafted(work, tmp_path, change)
        result = invoke(["sample", "-c", run_dir, "-n", "5", "--seed", "1"])
        assert result.exit_code == 0, result.output
        one_error_line(invoke(["sweep", "-c", run_dir, "--out", tmp_path / "sweep-out", "--length", "5",
                               "--num-samples", "1", "--temperatures", "1"]), "pass --corpus FILE")


def test_the_untouched_checkpoint_loads(work, tmp_path):
    """The control for the cases above: the same crafting with no change gives a working run."""
    run_dir = _crafted(work, tmp_path, lambda payload: None)
    assert checkpoint.load(run_dir).vocab == checkpoint.load(work / "run").vocab
    result = invoke(["sample", "-c", run_dir, "-n", "5", "--seed", "1"])
    assert result.exit_code == 0, result.output


def _opt(change_state):
    def change(payload):
        change_state(payload["train_state"]["optimizer"])
    return change


STATE_CASES = [
    ("state not a mapping", _set(["train_state"], [1, 2]), "not a mapping"),
    ("step a string", _set(["train_state", "step"], "4"), "step must be a non-negative integer"),
    ("step negative", _set(["train_state", "step"], -4), "step must be a non-negative integer"),
    ("epoch astronomical", _set(["train_state", "epoch"], 1 << 70), "epoch must be a non-negative integer"),
    ("index missing", _drop(["train_state", "index"]), "index must be a non-negative integer"),
    ("first_loss NaN", _set(["train_state", "first_loss"], float("nan")), "first_loss must be a finite number"),
    ("rng not a mapping", _set(["train_state", "rng"], "seed"), "rng must be a mapping"),
    ("rng wrong size", _set(["train_state", "rng", "torch"], torch.zeros(7, dtype=torch.uint8)), "random state"),
    ("hidden wrong count", lambda p: p["train_state"]["hidden"].pop(), "hidden must be a list of 2"),
    ("hidden wrong shape", lambda p: p["train_state"]["hidden"].__setitem__(0, torch.zeros(1, 4, 99)), "hidden state has shape"),
    ("hidden NaN", lambda p: p["train_state"]["hidden"][0].fill_(float("nan")), "not finite"),
    ("ema not a list", _set(["train_state", "ema"], {"w": 1}), "moving average does not match"),
    ("ema wrong shape", _set(["train_state", "ema"], [torch.zeros(2, 2)]), "moving average does not match"),
    ("optimizer missing", _drop(["train_state", "optimizer"]), "optimizer state is missing"),
    ("optimizer params wrong", _opt(lambda o: o["param_groups"][0].__setitem__("params", [0, 1])),
     "does not cover the model's parameters"),
    ("optimizer moment wrong shape", _opt(lambda o: o["state"][0].__setitem__("exp_avg", torch.zeros(3, 3))),
     "exp_avg of parameter 0 has shape (3, 3)"),
    ("optimizer unknown parameter", _opt(lambda o: o["state"].__setitem__(99, {})), "unknown parameters"),
    ("history not a mapping", _set(["meta", "history"], [1]), "history must hold"),
    ("history missing a key", _drop(["meta", "history", "val_loss"]), "history must hold"),
    ("history ragged", lambda p: p["meta"]["history"]["lr"].append(0.1), "history must hold"),
    ("history words", lambda p: p["meta"]["history"]["val_loss"].__setitem__(0, "low"), "history val_loss"),
    ("elapsed infinite", _set(["meta", "elapsed"], float("inf")), "elapsed must be a finite number"),
    ("best_step a string", _set(["meta", "best_step"], "2"), "best_step"),
    ("corpus a list", _set(["meta", "corpus"], ["play.txt"]), "corpus must be a mapping, got list"),
    ("train_config missing", _drop(["meta", "train_config"]), "train_config is missing"),
    ("train_config bad", _set(["meta", "train_config", "batch_size"], 0), "batch_size must be a positive integer"),
]


@pytest.mark.parametrize("case, change, fragment", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_crafted_training_state_is_refused_on_resume_without_touching_the_run(work, tmp_path, case, change,
                                                                              fragment):
    run_dir = _crafted(work, tmp_path, change)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    line = one_error_line(invoke(["train", work / "play.txt", "--resume", run_dir, "--max-steps", 8]))
    assert fragment in line, line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing written, nothing lost


def test_an_intact_training_state_resumes(work, tmp_path):
    run_dir = _crafted(work, tmp_path, lambda payload: None)
    result = invoke(["train", work / "play.txt", "--resume", run_dir, "--max-steps", 6])
    assert result.exit_code == 0, result.output
    assert checkpoint.load(run_dir / "last.pt").meta["step"] == 6
