"""Every bad input gets one clear line and a non-zero exit, never a traceback, for every command.

One small run is trained once for the module; each case then costs a CLI call. Cases that need a
file set it up by name (see `_prepare`). Fragments are what the user needs to read in the line.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import one_error_line
from training_procs import one_thread

from charrnn import checkpoint, config
from charrnn.cli import main

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
    """A folder with a trained run, its corpus and a collection of broken files."""
    from conftest import VERSE

    root = tmp_path_factory.mktemp("bad-input")
    text = root / "play.txt"
    text.write_text(VERSE * 36, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_CACHE_DIR", str(root / "cache"))
        result = invoke(["train", text, "--out", root / "run", *TRAIN_FAST])
    assert result.exit_code == 0, result.output
    return root


def _prepare(root, setup, monkeypatch):
    run = root / "run"
    if setup == "dir":
        (root / "adir").mkdir(exist_ok=True)
    elif setup == "emptydir":
        (root / "emptydir").mkdir(exist_ok=True)
    elif setup == "empty":
        (root / "empty.txt").write_bytes(b"")
    elif setup == "latin":
        (root / "latin.txt").write_bytes("señor, ¿qué tal?\n".encode("latin-1") * 50)
    elif setup == "binary":
        (root / "blob.bin").write_bytes(bytes(range(256)) * 4)
    elif setup == "short":
        (root / "short.txt").write_text("too short\n")
    elif setup == "unreadable":
        path = root / "secret.txt"
        path.write_text("a perfectly good text\n" * 100)
        if os.geteuid() != 0:
            path.chmod(0)
        else:  # root reads anything: refuse the way the kernel would for anyone else
            real_open = builtins.open

            def guarded(file, *args, **kwargs):
                if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(path):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real_open(file, *args, **kwargs)

            monkeypatch.setattr(builtins, "open", guarded)
            monkeypatch.setattr(io, "open", guarded)
    elif setup == "other-alphabet":
        (root / "other.txt").write_text((root / "play.txt").read_text(encoding="utf-8") + "XYZ{}|~" * 10,
                                        encoding="utf-8")
    elif setup == "vocab-limit":
        monkeypatch.setattr(config, "MAX_VOCAB_SIZE", 20)
    elif setup == "zip":  # a zip archive, but not one torch.save wrote
        import zipfile

        with zipfile.ZipFile(root / "archive.pt", "w") as z:
            z.writestr("notes.txt", "hello")
    elif setup == "fifo":
        if not (root / "fifo").exists():
            os.mkfifo(root / "fifo")
    elif setup == "endless":  # /dev/zero never ends: what is read from a device is bounded (here, small)
        monkeypatch.setattr("charrnn.data.MAX_STREAM_BYTES", 1 << 16)
    elif setup == "no-env-mirror":
        monkeypatch.setenv("CHARRNN_DATA_MIRROR", str(root / "gone"))
    elif setup == "env-mirror-file":
        monkeypatch.setenv("CHARRNN_DATA_MIRROR", str(root / "play.txt"))
    elif setup in ("corrupt", "truncated", "newer", "textfile", "no-last"):
        data = (run / "best.pt").read_bytes()
        if setup == "corrupt":
            (root / "corrupt.pt").write_bytes(data[:100] + bytes(len(data) - 200) + data[-100:])
        elif setup == "truncated":
            (root / "truncated.pt").write_bytes(data[: len(data) // 3])
            (root / "truncated-run").mkdir(exist_ok=True)  # a run whose last.pt a crash cut short
            (root / "truncated-run" / "last.pt").write_bytes((run / "last.pt").read_bytes()[:1000])
        elif setup == "newer":
            payload = torch.load(run / "best.pt", weights_only=True)
            payload["format_version"] = checkpoint.FORMAT_VERSION + 1
            newer = root / "newer"
            newer.mkdir(exist_ok=True)
            torch.save(payload, newer / "best.pt")
            payload = torch.load(run / "last.pt", weights_only=True)
            payload["format_version"] = checkpoint.FORMAT_VERSION + 1
            torch.save(payload, newer / "last.pt")
        elif setup == "textfile":
            (root / "notes.pt").write_text("these are my notes, not a model\n")
        else:
            only_best = root / "only-best"
            only_best.mkdir(exist_ok=True)
            (only_best / "best.pt").write_bytes(data)


CUDA = torch.cuda.is_available()

CASES = [
    # --- train: the corpus
    ("train", None, ["train", "{root}/missing.txt"], ["missing.txt", "no such file"]),
    ("train", "unreadable", ["train", "{root}/secret.txt"], ["secret.txt", "ermission denied"]),
    ("train", "emptydir", ["train", "{root}/emptydir"], ["emptydir"]),
    ("train", "empty", ["train", "{root}/empty.txt"], ["empty.txt", "is empty"]),
    ("train", "binary", ["train", "{root}/blob.bin"], ["blob.bin", "binary"]),
    ("train", "latin", ["train", "{root}/latin.txt"], ["not valid utf-8", "offset", "--encoding"]),
    ("train", "latin", ["train", "{root}/latin.txt", "--encoding", "klingon"], ["unknown encoding", "klingon"]),
    ("train", "short", ["train", "{root}/short.txt", *TRAIN_FAST],
     ["validation split", "holds 1 character", "at least 2", "try --val-frac 0.2 --seq-len 1"]),
    ("train", None, ["train", "{root}/play.txt", *TRAIN_FAST, "--val-frac", "0.999999"],
     ["--val-frac 0.999999 leaves 0 of the text's", "for training", "try --val-frac 0.1"]),
    ("train", None, ["train", "{root}/play.txt", "--batch-size", "512", "--seq-len", "100", "--max-steps", "1"],
     ["too few for one batch", "try --batch-size", "--seq-len"]),
    ("train", "vocab-limit", ["train", "{root}/play.txt", *TRAIN_FAST], ["over the model limit of 20"]),
    # --- train: sizes and lengths
    ("train", None, ["train", "{root}/play.txt", "--seq-len", "0"], ["--seq-len", "0"]),
    ("train", None, ["train", "{root}/play.txt", "--batch-size", "-4"], ["--batch-size", "-4"]),
    ("train", None, ["train", "{root}/play.txt", "--max-steps", "0"], ["--max-steps", "0"]),
    ("train", None, ["train", "{root}/play.txt", "--seq-len", "99999999"], ["--seq-len", "99999999"]),
    ("train", None, ["train", "{root}/play.txt", "--sample-length", "100000000"], ["--sample-length", "100000000"]),
    ("train", None, ["train", "{root}/play.txt", "--hidden-size", "65536", "--num-layers", "64", "--max-steps", "1"],
     ["GiB", "smaller --hidden-size"]),
    ("train", None, ["train", "{root}/play.txt", "--time-budget", "0s"], ["duration must be positive"]),
    ("train", None, ["train", "{root}/play.txt", "--time-budget", "soon"], ["cannot read duration"]),
    ("train", None, ["train", "{root}/play.txt", "--lr", "0"], ["--lr"]),
    ("train", None, ["train", "{root}/play.txt", "--dropout", "1"], ["--dropout"]),
    ("train", None, ["train", "{root}/play.txt", "--tie-weights", "--embed-dim", "8", "--hidden-size", "16",
                     "--max-steps", "1"], ["tie_weights", "embed_dim == hidden_size"]),
    # --- train: devices
    ("train", None, ["train", "{root}/play.txt", "--device", "tpu"], ["unknown device 'tpu'"]),
    ("train", None, ["train", "{root}/play.txt", "--device", "cuda:99"], ["cuda:99"]),
    # --- train: runs, resume, fine-tuning
    ("train", None, ["train", "{root}/play.txt", "--out", "{root}/run", *TRAIN_FAST], ["already holds a run", "--resume"]),
    ("train", None, ["train", "{root}/play.txt", "--resume", "{root}/nowhere"], ["nowhere", "does not exist"]),
    ("train", "no-last", ["train", "{root}/play.txt", "--resume", "{root}/only-best"], ["no last.pt"]),
    ("train", "other-alphabet", ["train", "{root}/other.txt", "--resume", "{root}/run", "--max-steps", "8"],
     ["does not match", "'X'", "--init-from"]),
    ("train", None, ["train", "{root}/play.txt", "--resume", "{root}/run", "--hidden-size", "64"],
     ["takes no --init-from or model options"]),
    ("train", "newer", ["train", "{root}/play.txt", "--resume", "{root}/newer"], ["newer than this charrnn", "upgrade"]),
    ("train", "truncated", ["train", "{root}/play.txt", "--resume", "{root}/truncated-run"],
     ["truncated-run/last.pt", "truncated or corrupt"]),
    ("train", None, ["train", "{root}/play.txt", "--resume", "{root}/run/best.pt"], ["run folder", "best.pt"]),
    ("train", None, ["train", "{root}/play.txt", "--resume", "{root}/run", "--out", "{root}/elsewhere"],
     ["takes no --out or --preset"]),
    ("train", None, ["train", "{root}/play.txt", "--resume", "{root}/run", "--preset", "cpu30"],
     ["takes no --out or --preset"]),
    ("train", None, ["train", ""], ["empty path"]),
    ("train", "fifo", ["train", "{root}/fifo"], ["fifo", "not a regular file", "save the text to a file"]),
    ("train", None, ["train", "{root}/play.txt", "--weight-decay", "inf"], ["--weight-decay", "inf"]),
    # --- train: absurd optimiser settings and counters are refused before anything is created
    ("train", None, ["train", "{root}/play.txt", "--lr", "1e39"], ["--lr", "0<x<=1"]),
    ("train", None, ["train", "{root}/play.txt", "--lr", "1e300"], ["--lr", "0<x<=1"]),
    ("train", None, ["train", "{root}/play.txt", "--lr", "nan"], ["lr", "nan"]),
    ("train", None, ["train", "{root}/play.txt", "--weight-decay", "1e30"], ["--weight-decay", "0<=x<=1"]),
    ("train", None, ["train", "{root}/play.txt", "--grad-clip", "1e300"], ["--grad-clip"]),
    ("train", None, ["train", "{root}/play.txt", "--max-steps", str(10**20)], ["--max-steps", "1000000000"]),
    ("train", None, ["train", "{root}/play.txt", "--warmup-steps", str(10**20)], ["--warmup-steps", "1000000000"]),
    ("train", None, ["train", "{root}/play.txt", "--decay-steps", str(10**20)], ["--decay-steps"]),
    ("train", None, ["train", "{root}/play.txt", "--eval-interval", str(10**20)], ["--eval-interval"]),
    ("train", None, ["train", "{root}/play.txt", "--time-budget", "1e400"], ["positive and finite"]),
    ("train", None, ["train", "{root}/play.txt", "--time-budget", "1e300"], ["absurdly long"]),
    ("train", None, ["train", "{root}/play.txt", "--init-from", "{root}/nowhere", *FINE_TUNE_FAST, "--out", "{root}/ft"],
     ["nowhere", "does not exist"]),
    ("train", None, ["train", "{root}/play.txt", "--init-from", "{root}/run", "--hidden-size", "64", "--num-layers", "3",
                     *TRAIN_FAST, "--out", "{root}/ft"], ["keeps the trained model's architecture", "--hidden-size, --num-layers"]),
    ("train", None, ["train", "{root}/play.txt", "--weight-drop", "1"], ["--weight-drop"]),
    ("train", None, ["train", "{root}/play.txt", "--ema", "1"], ["--ema"]),
    # --- sample: checkpoints
    ("sample", None, ["sample", "-c", "{root}/nowhere"], ["nowhere", "does not exist"]),
    ("sample", "emptydir", ["sample", "-c", "{root}/emptydir"], ["holds no checkpoint"]),
    ("sample", "corrupt", ["sample", "-c", "{root}/corrupt.pt"], ["corrupt.pt"]),
    ("sample", "truncated", ["sample", "-c", "{root}/truncated.pt"], ["truncated or corrupt"]),
    ("sample", "zip", ["sample", "-c", "{root}/archive.pt"], ["archive.pt", "not an archive torch.save wrote"]),
    ("sample", "textfile", ["sample", "-c", "{root}/notes.pt"], ["notes.pt", "not a charrnn checkpoint"]),
    ("sample", "newer", ["sample", "-c", "{root}/newer"], ["checkpoint format 2", "newer than this charrnn"]),
    # --- sample: prime
    ("sample", None, ["sample", "-c", "{root}/run", "--prime", "Zebra@"], ["2 character(s)", "'@'", "'Z'", "--unknown skip"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--prime-file", "{root}/nowhere.txt"], ["nowhere.txt"]),
    ("sample", "binary", ["sample", "-c", "{root}/run", "--prime-file", "{root}/blob.bin"], ["blob.bin", "binary"]),
    ("sample", "latin", ["sample", "-c", "{root}/run", "--prime-file", "{root}/latin.txt"], ["not valid utf-8", "--encoding"]),
    ("sample", "endless", ["sample", "-c", "{root}/run", "--prime-file", "/dev/zero"], ["/dev/zero", "save the text to a file"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--prime", "ROMEO", "--stop", "@"], ["stop string", "'@'"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--stop", "\\U00110000"], ["beyond the last Unicode code point"]),
    # --- sample: decoding options
    ("sample", None, ["sample", "-c", "{root}/run", "-t", "-1"], ["temperature must be > 0", "-1"]),
    ("sample", None, ["sample", "-c", "{root}/run", "-t", "nan"], ["nan"]),
    ("sample", None, ["sample", "-c", "{root}/run", "-t", "inf"], ["inf"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--top-k", "0"], ["top-k", "0"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--top-k", "-3"], ["top-k", "-3"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--top-p", "0"], ["top-p", "0"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--top-p", "1.5"], ["top-p", "1.5"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--top-p", "-0.2"], ["top-p", "-0.2"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--top-p", "nan"], ["top-p", "nan"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--epsilon", "2"], ["epsilon", "2"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--repetition-penalty", "0.5"], ["repetition", "0.5"]),
    ("sample", None, ["sample", "-c", "{root}/run", "-n", "-5"], ["-5"]),
    ("sample", None, ["sample", "-c", "{root}/run", "-n", "1000000000000"], ["1000000000000"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--num-samples", "0"], ["number of samples must be in 1..", "got 0"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--num-samples", "1000", "-n", "1000000"], ["absurdly many"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--beam", "1000", "-n", "200000"], ["beam", "absurdly many"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--beam", "2", "-n", "2000000"], ["beam search", "absurdly long"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--beam", "2", "--num-samples", "3"], ["--num-samples", "1..2"]),
    ("sample", None, ["sample", "-c", "{root}/run", "-t", "1e-200", "--top-k", "5"], ["-t 1e-200", "--top-k"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--length-penalty", "2"], ["--length-penalty", "--beam"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--greedy", "--top-k", "3"], ["--greedy", "--top-k", "would do nothing"]),
    ("sample", None, ["sample", "-c", "{root}/run", "-t", "0", "--top-p", "0.5", "--epsilon", "0.1"],
     ["-t 0", "--top-p, --epsilon"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--greedy", "-t", "0.7"], ["--greedy", "--temperature"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--beam", "0"], ["beam", "0"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--device", "tpu"], ["unknown device 'tpu'"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--seed", "-1"], ["--seed"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--no-such-option"], ["--no-such-option"]),
    # --- inspect, score, sweep, data
    ("inspect", None, ["inspect", "-c", "{root}/run", "--top-k", "0"], ["top-k", "0"]),
    ("inspect", None, ["inspect", "-c", "{root}/run", "--prime", "Zq"], ["'Z'", "--unknown skip"]),
    ("inspect", None, ["inspect", "-c", "{root}/run", "--prime", "Zq", "--csv"], ["'Z'", "--unknown skip"]),
    ("inspect", None, ["inspect", "-c", "{root}/run", "--stop", "@", "--csv"], ["stop string", "'@'"]),
    ("sample", None, ["sample", "-c", "{root}/run", "--show-top", "2", "--csv", "--prime", "Zq"], ["'Z'"]),
    ("inspect", None, ["inspect", "-c", "{root}/truncated.pt"], ["truncated"]),
    ("score", None, ["score", "-c", "{root}/run", "{root}/missing.txt"], ["missing.txt"]),
    ("score", "latin", ["score", "-c", "{root}/run", "{root}/latin.txt"], ["not valid utf-8", "--encoding"]),
    ("score", "empty", ["score", "-c", "{root}/run", "{root}/empty.txt"], ["empty"]),
    ("score", "other-alphabet", ["score", "-c", "{root}/run", "{root}/other.txt"], ["'X'", "--unknown skip"]),
    ("score", "corrupt", ["score", "-c", "{root}/corrupt.pt", "{root}/play.txt"], ["corrupt.pt", "truncated or corrupt"]),
    ("score", None, ["score", "-c", "{root}/run", "{root}/play.txt", "--context", "@"], ["context text", "'@'"]),
    ("score", None, ["score", "-c", "{root}/run", "{root}/play.txt", "--per-char", "{root}/nowhere/x.tsv"],
     ["{root}/nowhere", "does not exist"]),
    ("score", "endless", ["score", "-c", "{root}/run", "/dev/zero"], ["/dev/zero", "save the text to a file"]),
    ("sweep", None, ["sweep", "-c", "{root}/run", "--temperatures", "hot,cold", "--out", "{root}/sw"], ["hot"]),
    ("sweep", None, ["sweep", "-c", "{root}/run", "--temperatures", "-1", "--out", "{root}/sw"], ["-1"]),
    ("sweep", None, ["sweep", "-c", "{root}/run", "--length", "0", "--out", "{root}/sw"], ["--length"]),
    ("sweep", "truncated", ["sweep", "-c", "{root}/truncated.pt", "--out", "{root}/sw"], ["truncated"]),
    ("sweep", "latin", ["sweep", "-c", "{root}/run", "--corpus", "{root}/latin.txt", "--out", "{root}/sw"],
     ["not valid utf-8", "--encoding"]),
    ("data", None, ["data", "get", "wikipedia"], ["unknown corpus"]),
    ("data", None, ["data", "get", "shakespeare", "--mirror", "{root}/no-mirror", "--data-dir", "{root}/d"],
     ["no-mirror", "does not exist"]),
    ("data", "no-env-mirror", ["data", "get", "shakespeare", "--data-dir", "{root}/d"],
     ["{root}/gone", "$CHARRNN_DATA_MIRROR", "does not exist"]),
    ("data", "env-mirror-file", ["data", "get", "shakespeare", "--data-dir", "{root}/d"],
     ["play.txt", "$CHARRNN_DATA_MIRROR", "is not a folder"]),
    ("data", None, ["data", "get", "shakespeare", "--mirror", "{root}", "--url", "http://127.0.0.1:9/x"],
     ["--mirror or --url, not both"]),
]


@pytest.mark.parametrize("command, setup, args, fragments", CASES,
                         ids=[f"{c[0]}-{i}-{c[1] or '-'}" for i, c in enumerate(CASES)])
def test_bad_input_gives_one_clear_line_and_a_nonzero_exit(work, monkeypatch, command, setup, args, fragments):
    if "cuda" in " ".join(args) and CUDA:
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(work)
    _prepare(work, setup, monkeypatch)
    before = _leftovers(work)
    result = invoke([a.replace("{root}", str(work)) for a in args])
    one_error_line(result, *[f.replace("{root}", str(work)) for f in fragments])
    assert _leftovers(work) == before  # no run folder holding no run, no cache entry holding only its lock


def _leftovers(work) -> set[str]:
    """Folders a refused command must not leave: empty or checkpoint-less run folders, and corpus
    cache entries that hold nothing but a lock file."""
    found = set()
    for runs in (work / "checkpoints", work):
        if runs.is_dir():
            found |= {str(p) for p in runs.iterdir() if p.is_dir() and (p / "metrics.jsonl").exists()
                      and not (p / "last.pt").exists()}
    for cache in (work / "cache", Path(os.environ["CHARRNN_CACHE_DIR"])):
        if cache.is_dir():
            found |= {str(p) for p in cache.iterdir() if p.is_dir() and all(f.name.endswith("lock") for f in p.iterdir())}
    return found


def test_the_documented_ways_out_of_those_errors_work(work, monkeypatch):
    """The hints the errors give lead somewhere: --unknown skip, greedy temperature 0."""
    monkeypatch.chdir(work)
    skipped = invoke(["sample", "-c", work / "run", "--prime", "Zebra@", "--unknown", "skip", "-n", "5", "--seed", "1"])
    assert skipped.exit_code == 0, skipped.output
    greedy = invoke(["sample", "-c", work / "run", "-t", "0", "-n", "5"])
    assert greedy.exit_code == 0, greedy.output
    (work / "latin.txt").write_bytes("¿Qué pasó, señor?\n".encode("latin-1"))
    latin = invoke(["sample", "-c", work / "run", "--prime-file", work / "latin.txt", "--encoding", "latin-1",
                    "-n", "5", "--seed", "1"])
    assert latin.exit_code == 0, latin.output
    assert latin.stdout.startswith("¿Qué pasó, señor?\n")  # the prime, decoded as the user said, then the text
    by_file = invoke(["train", work / "play.txt", "--resume", work / "run" / "last.pt", "--max-steps", "5"])
    assert by_file.exit_code == 0 and "resuming at step 4" in by_file.output, by_file.output


def test_a_refused_sweep_leaves_no_output_folder(work, monkeypatch):
    monkeypatch.chdir(work)
    (work / "latin.txt").write_bytes("¿Qué pasó, señor?\n".encode("latin-1") * 20)
    args = ["sweep", "-c", work / "run", "--corpus", work / "latin.txt", "--out", work / "sw-latin", "--length", "3",
            "--num-samples", "1", "--temperatures", "1", "--no-greedy"]
    one_error_line(invoke(args), "--encoding")
    assert not (work / "sw-latin").exists()
    done = invoke([*args, "--encoding", "latin-1"])  # the way out the error names
    assert done.exit_code == 0, done.output
    assert (work / "sw-latin" / "report.md").is_file()


def test_no_run_anywhere_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(invoke(["sample"]), "no trained run found", "charrnn train")
    assert "--checkpoint" in line


@pytest.mark.parametrize("chars, extra, files", [(10, [], 1), (4, [], 1), (300, ["--val-frac", "0.999999"], 1),
                                                 (15, [], 3)])
def test_every_size_a_hint_suggests_trains(tmp_path, monkeypatch, chars, extra, files):
    # A corpus too small for the default sizes: the error names sizes, and each one given must train
    # (the validation split included: a 10-character text once got --batch-size 1 --seq-len 8, which
    # then failed on a 1-character validation split).
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "tiny"  # with several files, validation is the end of each (the default split)
    text.mkdir()
    for i in range(files):
        (text / f"part{i}.txt").write_text(("abcdefghij\n" * 40)[:chars // files], encoding="utf-8")
    small = ["--embed-dim", "8", "--hidden-size", "16", "--num-layers", "1", "--device", "cpu", "--sample-length", "0",
             "--precision", "fp32", "--max-steps", "1"]
    line = one_error_line(invoke(["train", text, *small, *extra]))
    hint = re.search(r"; try (.*?)(?:, or a longer text)?$", line)
    assert hint, line
    for n, option in enumerate(hint.group(1).split(" or ")):
        done = invoke(["train", text, *small, *extra, *option.split(), "--out", tmp_path / f"run{n}"])
        assert done.exit_code == 0, (line, option, done.output)
