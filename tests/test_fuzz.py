"""Property-based tests (hypothesis): no input makes charrnn crash, hang or lie.

Vocabulary: any Unicode text round-trips, or the error names exactly its unknown characters.
Sampler: any decoding options are refused with CharRNNError or give text of vocabulary characters,
of the asked length at most, with finite statistics, the same for the same seed.
Metrics: the pure functions of charrnn.metrics keep their documented ranges and agree with
brute-force definitions. CLI: random argument lists end in a normal exit or one `Error:` line.

Examples are few and derandomized (a fixed seed: the same cases every run, no luck involved);
deadlines are off because a shared CI machine can stall any single example.
"""

from __future__ import annotations

import json
import math
import os
import signal
from contextlib import contextmanager

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from training_procs import one_thread

from charrnn import checkpoint, config, metrics
from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.sample import Decoding, beam_search, generate_batch
from charrnn.vocab import UnknownCharactersError, Vocab

# CHARRNN_FUZZ_SCALE=20 runs twenty times as many examples (a long bug hunt; the default is for CI).
SCALE = max(1, int(os.environ.get("CHARRNN_FUZZ_SCALE", "1")))
FUZZ = settings(max_examples=60 * SCALE, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Any Unicode scalar value (no lone surrogates: no decoder produces them from a file).
chars = st.characters(exclude_categories=("Cs",))
texts = st.text(alphabet=chars, max_size=200)


# ------------------------------------------------------------------------------------------------
# Vocabulary


@FUZZ
@given(texts.filter(bool))
def test_any_text_round_trips_through_its_own_vocabulary(text):
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    assert all(0 <= i < len(vocab) for i in ids)
    assert vocab.decode(ids) == text
    assert len(vocab) == len(set(text)) and vocab.chars == sorted(vocab.chars)
    # the stored form (a JSON list of characters) gives back the same vocabulary
    assert Vocab.from_list(json.loads(json.dumps(vocab.to_list(), ensure_ascii=False))) == vocab


@FUZZ
@given(texts.filter(bool), texts)
def test_foreign_text_round_trips_or_names_exactly_its_unknown_characters(known, text):
    vocab = Vocab.from_text(known)
    missing = sorted(set(text) - set(known))
    if not missing:
        assert vocab.decode(vocab.encode(text)) == text
    else:
        with pytest.raises(UnknownCharactersError) as info:
            vocab.encode(text)
        assert info.value.chars == missing
        message = str(info.value)
        assert f"{len(missing)} character(s)" in message and "\n" not in message.replace("'\\n'", "")
        assert all(repr(c) in message for c in missing[:10])
    kept = "".join(c for c in text if c in set(known))
    assert vocab.decode(vocab.encode(text, unknown="skip")) == kept
    grown = vocab.extend(text)
    assert grown.chars[: len(vocab)] == vocab.chars and grown.decode(grown.encode(text)) == text


@settings(FUZZ, max_examples=8 * SCALE)
@given(texts.filter(bool))
def test_any_vocabulary_survives_a_checkpoint(tmp_path_factory, text):
    vocab = Vocab.from_text(text)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embed_dim=2, hidden_size=3, num_layers=1, dropout=0.0))
    meta = {"format_version": checkpoint.FORMAT_VERSION, "model_config": model.config.to_dict(),
            "vocab": vocab.to_list()}
    folder = tmp_path_factory.mktemp("vocab")
    checkpoint.save(folder / "best.pt", model, meta)
    checkpoint.write_meta(folder, meta)
    assert checkpoint.load(folder).vocab == vocab
    assert checkpoint.read_meta(folder)["vocab"] == vocab.to_list()


# ------------------------------------------------------------------------------------------------
# Sampler options

SAMPLE_TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n¿Qué? — ¡Sí!\n"
odd_numbers = st.one_of(st.booleans(), st.integers(-5, 0), st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([-1e-300, 1e300, 2**70, "0.5"]))


def mostly(valid, invalid=odd_numbers):
    """Valid values nine times in ten, so that most examples get as far as generating."""
    return st.integers(0, 9).flatmap(lambda roll: invalid if roll == 0 else valid)


temperatures = mostly(st.one_of(st.floats(0.0, 3.0), st.sampled_from([0.0, 1e-300, 5e-324, 1e-8, 1e4, 1e300])))
top_ks = mostly(st.one_of(st.none(), st.integers(1, 60)))
top_ps = mostly(st.one_of(st.none(), st.floats(0.0, 1.0, exclude_min=True), st.sampled_from([1e-300, 1.0])))
epsilons = mostly(st.floats(0.0, 1.0))
penalties = mostly(st.one_of(st.floats(1.0, 10.0), st.sampled_from([1.0, 1e300])))
windows = mostly(st.integers(1, 40))
numbers = st.one_of(st.none(), st.floats(0.0, 3.0), odd_numbers)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: a second thread only adds waiting on a busy machine."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def tiny_model():
    vocab = Vocab.from_text(SAMPLE_TEXT)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embed_dim=8, hidden_size=16, num_layers=2, dropout=0.0))
    with torch.no_grad():
        model.head.weight.mul_(30.0)  # peaked distributions, where rounding trouble would show
    return model.eval(), vocab


@FUZZ
@given(temperature=temperatures, top_k=top_ks, top_p=top_ps, epsilon=epsilons, repetition_penalty=penalties,
       repetition_window=windows, greedy=st.booleans(), length=st.integers(0, 25), num_samples=st.integers(1, 3),
       seed=st.integers(0, 2**64 - 1), prime=st.text(alphabet=st.sampled_from(sorted(set(SAMPLE_TEXT))), max_size=12),
       stop=st.lists(st.text(alphabet=st.sampled_from("e \n:!"), max_size=3), max_size=2))
def test_any_decoding_options_are_refused_cleanly_or_give_sound_text(tiny_model, temperature, top_k, top_p, epsilon,
                                                                   repetition_penalty, repetition_window, greedy,
                                                                   length, num_samples, seed, prime, stop):
    model, vocab = tiny_model
    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "epsilon": epsilon,
               "repetition_penalty": repetition_penalty, "repetition_window": repetition_window, "greedy": greedy}
    try:
        decoding = Decoding(**{k: v for k, v in options.items() if v is not None})
    except CharRNNError as exc:  # refused: in one line that says what is wrong
        assert "\n" not in str(exc) and any(word in str(exc) for word in
                                            ("temperature", "top-k", "top-p", "epsilon", "repetition")), str(exc)
        return
    samples = generate_batch(model, vocab, length, num_samples=num_samples, prime=prime, decoding=decoding,
                             seed=seed, stop=stop)
    assert len(samples) == num_samples
    for sample in samples:
        assert len(sample.text) <= length and set(sample.text) <= set(vocab.chars)
        assert sample.num_chars == len(sample.text)
        assert len(sample.text) == length or sample.stopped
        for value in (sample.logprob, sample.nll, sample.entropy):
            assert math.isfinite(value), (decoding, sample)
        assert sample.logprob <= 1e-9 and sample.nll >= -1e-9 and sample.entropy >= -1e-9
        if decoding.is_greedy:
            assert sample.entropy <= 1e-9
    again = generate_batch(model, vocab, length, num_samples=num_samples, prime=prime, decoding=decoding,
                           seed=seed, stop=stop)
    assert [s.text for s in again] == [s.text for s in samples]  # same seed, same text


@settings(FUZZ, max_examples=25 * SCALE)
@given(width=st.integers(-1, 6), num_return=st.integers(0, 4), length=st.integers(-2, 15),
       length_penalty=numbers, prime=st.text(alphabet=chars, max_size=6), unknown=st.sampled_from(["error", "skip"]))
def test_beam_search_options_are_refused_cleanly_or_give_sound_text(tiny_model, width, num_return, length,
                                                                    length_penalty, prime, unknown):
    model, vocab = tiny_model
    try:
        results = beam_search(model, vocab, length, width=width, num_return=num_return, prime=prime,
                              unknown=unknown, length_penalty=length_penalty)
    except CharRNNError as exc:
        assert "\n" not in str(exc).replace("'\\n'", "")
        return
    assert 1 <= len(results) <= num_return
    for result in results:
        assert len(result.text) <= length and set(result.text) <= set(vocab.chars)
        assert math.isfinite(result.logprob) and result.logprob <= 1e-9


@settings(FUZZ, max_examples=30 * SCALE)
@given(prime=st.text(alphabet=chars, max_size=20))
def test_any_prime_is_used_or_its_unknown_characters_are_listed(tiny_model, prime):
    model, vocab = tiny_model
    missing = sorted(set(prime) - set(vocab.chars))
    if missing:
        with pytest.raises(CharRNNError, match="--unknown skip") as info:
            generate_batch(model, vocab, 3, prime=prime)
        assert all(repr(c) in str(info.value) for c in missing[:10])
    assert len(generate_batch(model, vocab, 3, prime=prime, unknown="skip")[0].text) == 3


# ------------------------------------------------------------------------------------------------
# Metrics


@FUZZ
@given(text=st.text(alphabet=st.sampled_from("ab c\n'’é"), max_size=120) | texts, n=st.integers(1, 12))
def test_repetition_metrics_stay_in_range(text, n):
    distinct = metrics.distinct_ngram_ratio(text, n)
    assert 0.0 < distinct <= 1.0
    assert math.isclose(metrics.repeated_ngram_share(text, n), 1.0 - distinct)
    assert len(metrics.ngrams(text, n)) == max(len(text) - n + 1, 0)
    ratio = metrics.compression_ratio(text)
    assert math.isfinite(ratio) and (ratio > 0) == bool(text)
    found = metrics.words(text)
    assert all(w and w == w.lower() for w in found)
    assert metrics.invented_word_share(text, found) == 0.0
    assert 0.0 <= metrics.invented_word_share(text, []) <= 1.0


@FUZZ
@given(text=st.text(alphabet=st.sampled_from("ab "), max_size=80) | texts, min_repeats=st.integers(2, 4),
       min_span=st.integers(1, 40))
def test_a_reported_loop_really_is_a_loop(text, min_repeats, min_span):
    loop = metrics.trailing_loop(text, min_repeats, min_span)
    period = metrics.loop_period(text, min_repeats, min_span)
    if loop is None:
        assert period == 0
        return
    assert period == loop.period >= 1 and loop.start + loop.span == len(text)
    assert loop.span >= min_repeats * loop.period and loop.span >= min_span
    tail = text[loop.start:]
    assert all(tail[i] == tail[i - loop.period] for i in range(loop.period, len(tail)))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from("abc"), max_size=60) | st.text(alphabet=chars, max_size=40),
       probe=st.text(alphabet=st.sampled_from("abcd"), max_size=8))
def test_the_corpus_index_agrees_with_brute_force(text, probe):
    assert metrics.suffix_array(text).tolist() == sorted(range(len(text)), key=lambda i: text[i:])
    index = metrics.CorpusIndex(text, max_match=16)
    assert index.contains(probe) == (probe in text)
    for i in range(0, len(text), 7):
        assert index.contains(text[i:i + 5])
    lengths = metrics.match_lengths(probe, index)
    for i, length in enumerate(lengths):
        assert probe[i:i + length] in text
        assert i + length == len(probe) or length == index.max_match or probe[i:i + length + 1] not in text
    share = metrics.copied_ngram_share(probe, index, n=3)
    assert 0.0 <= share <= 1.0
    assert metrics.longest_copy(probe, index) in text


@FUZZ
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=12), st.data())
def test_rank_correlation_stays_in_range(xs, data):
    ys = data.draw(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=len(xs),
                            max_size=len(xs)))
    ranks = metrics.ranks(xs)
    assert math.isclose(sum(ranks), len(xs) * (len(xs) + 1) / 2)
    rho = metrics.spearman(xs, ys)
    assert math.isnan(rho) or -1.0 - 1e-9 <= rho <= 1.0 + 1e-9
    if len(set(xs)) > 1:
        assert math.isclose(metrics.spearman(xs, xs), 1.0)


# ------------------------------------------------------------------------------------------------
# The CLI argument surface

VALUES = ["-1", "0", "-0", "1", "2", "3", "0.5", "1e-300", "1e400", "nan", "inf", "-inf", "100000001",
          "9223372036854775807", "99999999999999999999",
          "", " ", "abc", "é", "\n", "--", "-", "1,2", "0.1,nan", "2s", "soon", "cpu", "cuda", "tpu", "lstm", "gru",
          "skip", "error", "jsonl", "text", "shakespeare", "quick", "utf-16", "klingon", "{run}", "{run}/best.pt",
          "{text}", "{missing}", "{tmp}/out", "{tmp}/prime.txt", "{tmp}"]
PATHS = ["{run}", "{run}/best.pt", "{run}/last.pt", "{text}", "{missing}", "{tmp}", "{tmp}/prime.txt"]


def _commands() -> dict[str, tuple[list[tuple[str, bool]], int]]:
    """Every command line's options (name, takes a value) and how many positional arguments it has."""
    from charrnn.cli import main

    found = {}

    def walk(command, prefix):
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, prefix + [name])
            return
        options, positionals = [], 0
        for param in command.params:
            if param.param_type_name == "argument":
                positionals += 1
                continue
            takes_value = not (getattr(param, "is_flag", False) or getattr(param, "count", False))
            options += [(o, takes_value) for o in param.opts + param.secondary_opts]
        found[" ".join(prefix)] = (options, positionals)

    walk(main, [])
    return found


COMMAND_LINES = _commands()
tokens = st.one_of(st.sampled_from(VALUES), st.text(alphabet=chars, max_size=6))


@st.composite
def command_lines(draw) -> list[str]:
    """A command, then options of that command with values (sometimes odd ones), then positionals;
    now and then a stray token. Structured so that most examples get past click into charrnn."""
    name = draw(st.sampled_from(sorted(COMMAND_LINES)))
    options, positionals = COMMAND_LINES[name]
    argv = name.split()
    if name == "sweep":  # keep each sweep to a moment; drawn options may still override these
        argv += ["--length", "3", "--num-samples", "1", "--temperatures", "0.5,1"]
    if any(o == "--checkpoint" for o, _ in options) and draw(st.integers(0, 4)):
        argv += ["-c", draw(st.sampled_from(PATHS))]
    for _ in range(draw(st.integers(0, 4))):
        option, takes_value = draw(st.sampled_from(options)) if options else ("--help", False)
        argv.append(option)
        if takes_value:
            argv.append(draw(tokens))
    for _ in range(positionals):
        argv.append(draw(st.sampled_from(PATHS) | tokens) if draw(st.integers(0, 3)) else "{text}")
    if not draw(st.integers(0, 9)):
        argv.insert(draw(st.integers(0, len(argv))), draw(tokens))
    return argv


class _Hang(Exception):
    pass


@contextmanager
def _time_limit(seconds: int):
    def alarm(signum, frame):
        raise _Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory):
    from conftest import VERSE

    from charrnn.cli import main

    root = tmp_path_factory.mktemp("cli-fuzz")
    (root / "play.txt").write_text(VERSE * 4, encoding="utf-8")
    (root / "prime.txt").write_text("ROMEO:\n", encoding="utf-8")
    (root / "mirror").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_CACHE_DIR", str(root / "cache"))
        result = CliRunner().invoke(main, ["train", str(root / "play.txt"), "--out", str(root / "run"),
                                           "--embed-dim", "8", "--hidden-size", "16", "--num-layers", "1",
                                           "--batch-size", "2", "--seq-len", "8", "--max-steps", "2",
                                           "--eval-interval", "1", "--device", "cpu", "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    return root


@settings(FUZZ, max_examples=80 * SCALE)
@given(argv=command_lines())
def test_random_command_lines_never_crash_or_hang(cli_world, monkeypatch, argv):
    from charrnn.cli import main

    root = cli_world
    monkeypatch.chdir(root)
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("CHARRNN_DATA_MIRROR", str(root / "mirror"))  # never the network
    for preset in config.PRESETS.values():  # whatever trains, trains for a moment
        monkeypatch.setitem(preset, "train", {**preset["train"], "time_budget": 0.5})
    subs = {"{run}": str(root / "run"), "{text}": str(root / "play.txt"), "{missing}": str(root / "missing.txt"),
            "{tmp}": str(root)}
    for key, value in subs.items():
        argv = [a.replace(key, value) for a in argv]
    with _time_limit(300):  # generous: a shared machine can starve one call for a minute; a hang is forever
        result = CliRunner().invoke(main, argv)
    event(f"exit {result.exit_code}")  # --hypothesis-show-statistics: how deep the examples got
    assert "Traceback" not in result.output, (argv, result.output)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"charrnn {argv} raised {result.exception!r}") from result.exception
    if result.exit_code not in (0, None):
        errors = sum(line.startswith("Error") for line in result.output.splitlines())
        shown_help = result.output.startswith("Usage:") and errors == 0  # a group named without a command
        assert errors == 1 or shown_help, (argv, result.output)
