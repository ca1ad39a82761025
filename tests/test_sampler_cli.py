"""`charrnn sample`, `inspect` and `score` on a tiny checkpoint written directly (no training)."""

import csv
import io
import json
import re

import pytest
import torch
from click.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli import main
from charrnn.config import ModelConfig
from charrnn.data import encode, stream_rows
from charrnn.model import CharRNN
from charrnn.sample import Decoding, beam_search, generate, generate_batch
from charrnn.train import evaluate
from charrnn.vocab import Vocab

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me! señor\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(2)
    vocab = Vocab.from_text(TEXT)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embed_dim=8, hidden_size=16, num_layers=2, dropout=0.0))
    for p in model.parameters():
        p.data.normal_(0.0, 0.4)
    path = tmp_path_factory.mktemp("run")
    checkpoint.save(path / checkpoint.BEST, model, {"model_config": model.config.to_dict(), "vocab": vocab.to_list()})
    return path


@pytest.fixture(scope="module")
def loaded(run_dir):
    ckpt = checkpoint.load(run_dir)
    return ckpt.model, ckpt.vocab


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_text_output_streams_the_library_sample_with_the_prime_echoed(run_dir, loaded):
    model, vocab = loaded
    expected = generate(model, vocab, 120, prime="ROMEO:", temperature=0.7, top_k=5, seed=4)
    result = run("sample", "-c", run_dir, "-n", 120, "-t", 0.7, "--top-k", 5, "--seed", 4, "--prime", "ROMEO:")
    assert result.exit_code == 0, result.output
    assert result.stdout == "ROMEO:" + expected + "\n"
    assert "seed 4, T=0.7 top-k=5" in result.stderr
    quiet = run("sample", "-c", run_dir, "-n", 120, "-t", 0.7, "--top-k", 5, "--seed", 4, "--prime", "ROMEO:",
                "--no-echo-prime")
    assert quiet.stdout == expected + "\n"


def test_prime_file_and_escaped_stop_strings(run_dir, loaded, tmp_path):
    model, vocab = loaded
    prime = "JULIET:\nAy me!\n"
    (tmp_path / "prime.txt").write_text(prime, encoding="utf-8")
    free = generate(model, vocab, 400, prime=prime, temperature=1.0, seed=1)
    result = run("sample", "-c", run_dir, "-n", 400, "-t", 1.0, "--seed", 1, "--prime-file", tmp_path / "prime.txt",
                 "--stop", r"\n", "--stop", "ñoñoñ", "--no-echo-prime")
    assert result.exit_code == 0, result.output
    assert "\n" in free  # so the stop must have fired
    assert result.stdout == free[: free.index("\n") + 1] + "\n"


def test_jsonl_gives_one_parsable_record_per_batched_sample(run_dir, loaded):
    model, vocab = loaded
    result = run("sample", "-c", run_dir, "-n", 60, "--num-samples", 3, "--seed", 10, "--format", "jsonl",
                 "--top-p", 0.9, "-t", 1.2)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    expected = generate_batch(model, vocab, 60, num_samples=3, decoding=Decoding(temperature=1.2, top_p=0.9), seed=10)
    assert [r["text"] for r in records] == [s.text for s in expected]
    assert [r["seed"] for r in records] == [10, 11, 12]
    for r in records:
        assert r["temperature"] == 1.2 and r["strategy"] == "T=1.2 top-p=0.9"
        assert r["logprob"] < 0 and r["logprob_per_char"] == pytest.approx(r["logprob"] / r["num_chars"])


def test_text_output_separates_several_samples(run_dir):
    result = run("sample", "-c", run_dir, "-n", 30, "--num-samples", 2, "--seed", 3, "--prime", "ROMEO")
    assert result.exit_code == 0, result.output
    headers = [line for line in result.stdout.splitlines() if line.startswith("--- sample ")]
    assert len(headers) == 2 and "seed 3" in headers[0] and "seed 4" in headers[1]


def test_beam_prints_the_best_continuations(run_dir, loaded):
    model, vocab = loaded
    beams = beam_search(model, vocab, 40, width=4, num_return=2, prime="But")
    result = run("sample", "-c", run_dir, "-n", 40, "--beam", 4, "--num-samples", 2, "--prime", "But",
                 "--format", "jsonl")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == [b.text for b in beams]
    assert records[0]["strategy"] == "beam 4" and records[0]["seed"] is None
    assert records[0]["logprob_per_char"] >= records[1]["logprob_per_char"]


def test_show_top_table_and_csv(run_dir, loaded):
    model, vocab = loaded
    text = generate(model, vocab, 12, prime="ROMEO:", temperature=0.9, seed=5)
    table = run("sample", "-c", run_dir, "-n", 12, "-t", 0.9, "--seed", 5, "--prime", "ROMEO:", "--show-top", 3)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["pos", "context", "chose", "p"] and len(lines) == 13
    assert len({line.index("|") for line in lines}) == 1  # aligned
    same = run("inspect", "-c", run_dir, "-n", 12, "-t", 0.9, "--seed", 5, "--prime", "ROMEO:", "-k", 3, "--csv")
    rows = list(csv.reader(io.StringIO(same.stdout)))
    assert rows[0] == ["position", "context", "chosen", "chosen_prob", "char_1", "prob_1", "char_2", "prob_2",
                       "char_3", "prob_3"]
    assert "".join(r[2] for r in rows[1:]) == text
    assert rows[1][1] == "ROMEO:" and all(float(r[5]) >= float(r[7]) for r in rows[1:])


def test_score_matches_the_trainers_evaluation(run_dir, loaded, tmp_path):
    model, vocab = loaded
    path = tmp_path / "verse.txt"
    path.write_text(TEXT * 3, encoding="utf-8")
    expected = evaluate(model, stream_rows(encode(TEXT * 3, vocab), 1), torch.device("cpu"))
    result = run("score", path, "-c", run_dir, "--per-char", tmp_path / "surprisal.tsv")
    assert result.exit_code == 0, result.output
    found = re.search(r"([\d.]+) nats/char\s+([\d.]+) bits/char\s+perplexity ([\d.]+)", result.output)
    nats, bits, ppl = (float(g) for g in found.groups())
    assert nats == pytest.approx(expected, abs=1e-4)
    assert bits == pytest.approx(expected / 0.6931471805599453, abs=1e-4)
    assert ppl == pytest.approx(2.718281828459045 ** expected, rel=1e-3)
    dump = (tmp_path / "surprisal.tsv").read_text(encoding="utf-8").splitlines()
    assert dump[0] == "position\tchar\tnats\tbits" and len(dump) == len(TEXT * 3)  # header + all but the first char
    assert dump[1].split("\t")[:2] == ["1", "O"]
    assert sum(float(line.split("\t")[2]) for line in dump[1:]) / (len(dump) - 1) == pytest.approx(expected, abs=1e-4)


def test_per_char_through_a_symlink_writes_the_file_it_points_to(run_dir, tmp_path):
    path = tmp_path / "verse.txt"
    path.write_text(TEXT, encoding="utf-8")
    target, link = tmp_path / "target.tsv", tmp_path / "link.tsv"
    target.write_text("old\n", encoding="utf-8")
    link.symlink_to(target)
    result = run("score", path, "-c", run_dir, "--per-char", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.read_text(encoding="utf-8").startswith("position\tchar")


def test_per_char_to_dev_stdout_keeps_the_shells_redirection(run_dir, tmp_path):
    # /dev/stdout is a link to the file the shell opened: swapping a new file in under it would lose
    # what goes to stdout, and with >> the file's earlier contents too.
    import subprocess
    import sys

    path = tmp_path / "verse.txt"
    path.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "out.tsv"
    out.write_text("earlier\n", encoding="utf-8")
    with open(out, "a") as stdout:
        done = subprocess.run([sys.executable, "-m", "charrnn", "score", str(path), "-c", str(run_dir), "--per-char",
                               "/dev/stdout"], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "earlier" and lines[1] == "position\tchar\tnats\tbits" and len(lines) == len(TEXT) + 1
    assert "nats/char" in done.stderr  # the summary went to stderr, out of the table's way


@pytest.mark.parametrize("args, fragment", [
    (["-t", "-0.5"], "temperature"),
    (["--top-k", "0"], "top-k"),
    (["--top-p", "1.5"], "top-p"),
    (["--top-p", "0"], "top-p"),
    (["-n", "10000000000"], "absurdly large"),
    (["--num-samples", "0"], "number of samples"),
    (["--beam", "3", "-t", "0.5"], "--beam"),
    (["--stop", "\\q"], "unknown escape"),
    (["--prime", "a", "--prime-file", "x.txt"], "not both"),
    (["--show-top", "3", "--num-samples", "2"], "--show-top"),
])
def test_bad_options_give_one_line_errors(run_dir, args, fragment):
    result = run("sample", "-c", run_dir, *args)
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in result.output, result.output
