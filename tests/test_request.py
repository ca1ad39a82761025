"""Generation requests are checked by the library: the rules the CLI enforces hold for any front end
(a web server building requests from JSON included), with the CLI's one-line messages."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import one_error_line

from charrnn import checkpoint
from charrnn.config import ModelConfig
from charrnn.corpus_cache import parse_separator
from charrnn.decoding import Decoding
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.request import GenerationRequest
from charrnn.sample import generate
from charrnn.vocab import Vocab

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(3)
    vocab = Vocab.from_text(TEXT)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embed_dim=8, hidden_size=16, num_layers=1, dropout=0.0))
    path = tmp_path_factory.mktemp("run")
    checkpoint.save(path / checkpoint.BEST, model, {"model_config": model.config.to_dict(), "vocab": vocab.to_list()})
    return path


def test_a_valid_request_carries_what_the_front_end_asked_for():
    request = GenerationRequest.build(length=50, prime="ROMEO:", seed=4, stop=[r"\n\n", "yonder"], top_k=5,
                                      temperature=0.5)
    assert request.stops == ("\n\n", "yonder") and request.seed == 4 and not request.seed_chosen
    assert request.decoding == Decoding(temperature=0.5, top_k=5) and request.streams and request.echo_prime
    chosen = GenerationRequest.build(length=5)
    assert chosen.seed_chosen and 0 <= chosen.seed < 2**32 and chosen.decoding.temperature == 0.8
    jsonl = GenerationRequest.build(length=5, num_samples=2, format="jsonl")
    assert not jsonl.echo_prime and not jsonl.streams


@pytest.mark.parametrize("options, message", [
    # the rules the CLI had
    ({"length": 0}, "--length must be at least 1, got 0"),
    ({"length": 10**12}, "absurdly large"),
    ({"num_samples": 0}, "number of samples must be in 1..100,000, got 0"),
    ({"show_top": 3, "num_samples": 2}, "--show-top shows one sample; it takes no --beam, --num-samples or --format"),
    ({"show_top": 0}, "number of candidates shown must be in 1..1000, got 0"),
    ({"show_top": 3, "context_width": -1}, "context width must be in 0..10000, got -1"),
    ({"csv": True}, "--csv goes with --show-top"),
    ({"length_penalty": 2.0}, "--length-penalty ranks beam search results; it goes with --beam"),
    ({"beam": 2, "num_samples": 3}, "--num-samples with --beam 2 must be in 1..2 (the best N beams)"),
    ({"beam": 2, "length": 2_000_000}, "beam search over 2,000,000 characters is absurdly long"),
    ({"beam": 3, "temperature": 0.5, "top_k": 4}, "--beam ranks by the model's own probabilities; drop --temperature, "
                                                  "--top-k"),
    ({"num_samples": 1000, "length": 1_000_000}, "absurdly many"),
    ({"prime": "a", "prime_file": "x.txt"}, "give --prime or --prime-file, not both"),
    ({"greedy": True, "top_k": 3}, "--greedy always takes the most likely character, so --top-k would do nothing"),
    ({"temperature": 1e-200, "top_p": 0.5}, "-t 1e-200 always takes the most likely character, so --top-p"),
    ({"greedy": True, "temperature": 0.7}, "so --temperature would do nothing"),
    ({"stop": [r"\q"]}, r"unknown escape \q"),
    ({"temperature": -1.0}, "temperature must be > 0"),
    ({"top_p": 1.5}, "top-p must be in (0, 1]"),
    # issue 16's options that did nothing, and --beam 0
    ({"beam": 0}, "beam width must be in 1..1000, got 0"),
    ({"beam": -3, "num_samples": 1}, "beam width must be in 1..1000, got -3"),
    ({"repetition_window": 5}, "--repetition-window does nothing without --repetition-penalty"),
    ({"stop": [""]}, "--stop '' is empty, so it would end nothing"),
    ({"stop": ["a", ""]}, "--stop '' is empty"),
    ({"format": "jsonl", "echo_prime": True}, "--echo-prime prints the prime before a text; --format jsonl"),
    # a front end sending JSON: the wrong type is one line, never a TypeError
    ({"length": "100"}, "length must be a non-negative integer, got '100'"),
    ({"temperature": "hot"}, "temperature must be > 0"),
    ({"top_k": 2.5}, "top-k must be an integer"),
    ({"greedy": "yes"}, "greedy must be true or false"),
    ({"seed": "7"}, "seed must be an integer in 0.."),
    ({"seed": -1}, "seed must be an integer in 0.."),
    ({"stop": [3]}, "stop strings must be a list of strings"),
    ({"prime": 5}, "prime must be a string"),
    ({"format": "xml"}, "format must be one of text, jsonl"),
    ({"unknown": "drop"}, "unknown must be one of error, skip"),
    ({"echo_prime": "no"}, "echo_prime must be true or false"),
    ({"beam": "4"}, "beam width must be in 1..1000, got '4'"),
    ({"min_p": 0.1}, "unknown generation option(s): min_p"),
])
def test_every_rule_is_one_library_error(options, message):
    with pytest.raises(CharRNNError) as info:
        GenerationRequest.build(**{"length": 100, **options})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_request_from_json_builds_or_fails_in_one_line():
    data = json.loads('{"length": 40, "prime": "ROMEO:", "seed": 3, "temperature": 0.7, "top_p": 0.9, '
                      '"stop": ["\\\\n\\\\n"], "num_samples": 2, "format": "jsonl"}')
    request = GenerationRequest.build(**data)
    assert request.stops == ("\n\n",) and request.decoding.top_p == 0.9 and request.num_samples == 2


def test_checks_against_the_vocabulary(run_dir):
    vocab = checkpoint.load(run_dir).vocab
    GenerationRequest.build(prime="ROMEO:", stop=["yonder"]).check_vocab(vocab)
    with pytest.raises(CharRNNError, match=r"prime .*'Z'.*--unknown skip"):
        GenerationRequest.build(prime="Zebra").check_vocab(vocab)
    GenerationRequest.build(prime="Zebra", unknown="skip").check_vocab(vocab)
    with pytest.raises(CharRNNError, match="can never occur"):
        GenerationRequest.build(stop=["@"]).check_vocab(vocab)


def test_options_at_their_defaults_are_not_refused():
    # a front end may send every field: defaults say nothing, so they are never "ignored options"
    GenerationRequest.build(greedy=True, top_k=None, top_p=None, epsilon=0.0, repetition_penalty=1.0,
                            repetition_window=20, length_penalty=1.0)
    GenerationRequest.build(beam=3, greedy=False, epsilon=0.0, repetition_penalty=1.0, echo_prime=True)
    GenerationRequest.build(format="jsonl", num_samples=2, echo_prime=False)


def run(*args):
    return CliRunner().invoke(main_command(), [str(a) for a in args])


def main_command():
    from charrnn.cli import main

    return main


@pytest.mark.parametrize("args, fragments", [
    (["--beam", "0"], ["beam width must be in 1..1000, got 0"]),
    (["--repetition-window", "5"], ["--repetition-window does nothing without --repetition-penalty"]),
    (["--stop", ""], ["--stop '' is empty"]),
    (["--echo-prime", "--format", "jsonl", "--num-samples", "2"], ["--echo-prime", "--format jsonl"]),
])
def test_the_cli_prints_the_librarys_line(run_dir, args, fragments):
    one_error_line(run("sample", "-c", run_dir, *args), *fragments)


def test_an_empty_checkpoint_path_is_refused_not_read_as_the_current_folder(run_dir, monkeypatch):
    monkeypatch.chdir(run_dir)  # a folder holding a run: '' would have loaded it
    (run_dir / "some.txt").write_text("some text to read\n", encoding="utf-8")
    for command in (["sample", "-n", "5"], ["inspect", "-n", "5"], ["score", "some.txt"], ["sweep"],
                    ["explain", "some.txt"]):
        one_error_line(run(*command, "-c", ""), "is empty")


def test_generate_can_return_the_prime_as_the_cli_prints_it(run_dir):
    ckpt = checkpoint.load(run_dir)
    alone = generate(ckpt.model, ckpt.vocab, 30, prime="ROMEO:", seed=2, temperature=0.7)
    whole = generate(ckpt.model, ckpt.vocab, 30, prime="ROMEO:", seed=2, temperature=0.7, include_prime=True)
    assert whole == "ROMEO:" + alone
    printed = run("sample", "-c", run_dir, "-n", 30, "--prime", "ROMEO:", "--seed", 2, "-t", 0.7)
    assert printed.stdout == whole + "\n"


def test_one_escape_parser_for_stop_strings_and_separators():
    assert parse_separator(r"\x41\n\u00e9") == "A\né"
    request = GenerationRequest.build(stop=[r"\x41\n\u00e9"])
    assert request.stops == ("A\né",)
    for bad in (r"\q", "\\", r"\x4"):
        with pytest.raises(CharRNNError):
            parse_separator(bad)
