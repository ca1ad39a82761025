import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.sample import generate, warm
from charrnn.vocab import Vocab

TEXT = "to be or not to be, that is the question — señor\n"


@pytest.fixture
def model_and_vocab():
    torch.manual_seed(0)
    vocab = Vocab.from_text(TEXT)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embed_dim=8, hidden_size=24, num_layers=2, dropout=0.0))
    return model.eval(), vocab


def test_priming_in_one_call_equals_char_by_char(model_and_vocab):
    model, vocab = model_and_vocab
    ids = vocab.encode("that is the question")
    logits_all, (h_all, c_all) = warm(model, ids)
    hidden = None
    for i in ids:
        logits_one, hidden = warm(model, [i], hidden)
    torch.testing.assert_close(logits_all, logits_one, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_all, hidden[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_all, hidden[1], rtol=1e-5, atol=1e-5)


def test_same_seed_same_text_and_other_seed_differs(model_and_vocab):
    model, vocab = model_and_vocab
    a = generate(model, vocab, 200, prime="to be", temperature=1.0, seed=7)
    b = generate(model, vocab, 200, prime="to be", temperature=1.0, seed=7)
    c = generate(model, vocab, 200, prime="to be", temperature=1.0, seed=8)
    assert a == b and a != c
    assert len(a) == 200 and set(a) <= set(vocab.chars)


def test_greedy_is_temperature_zero_and_finite_at_tiny_temperature(model_and_vocab):
    model, vocab = model_and_vocab
    greedy = generate(model, vocab, 100, prime="to", greedy=True, seed=1)
    assert generate(model, vocab, 100, prime="to", temperature=0, seed=2) == greedy
    # T=1e-4 is greedy in all but name, and must neither overflow nor produce NaN
    assert generate(model, vocab, 100, prime="to", temperature=1e-4, seed=3) == greedy


def test_streaming_callback_sees_every_character(model_and_vocab):
    model, vocab = model_and_vocab
    seen = []
    text = generate(model, vocab, 50, seed=4, on_text=seen.append)
    assert "".join(seen) == text


def test_bad_options_are_clear(model_and_vocab):
    model, vocab = model_and_vocab
    with pytest.raises(CharRNNError, match="temperature must be > 0"):
        generate(model, vocab, 10, temperature=-0.5)
    with pytest.raises(CharRNNError, match=r"prime .*'Z'.*--unknown skip"):
        generate(model, vocab, 10, prime="Zebra")
    assert len(generate(model, vocab, 10, prime="Zebra", unknown="skip")) == 10


# ----------------------------------------------------------------------------------------------
# the decoding toolbox (issue 4): each strategy against its definition

import math  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

from charrnn.sample import (  # noqa: E402
    Decoding,
    beam_search,
    generate_batch,
    inspect_steps,
    sampling_distribution,
    stream,
    unescape,
)
from charrnn.scoring import score_text  # noqa: E402


@pytest.fixture(scope="module")
def peaky():
    """A tiny model with large random weights: confident, varied predictions (and greedy loops)."""
    torch.manual_seed(1)
    vocab = Vocab.from_text(TEXT)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embed_dim=8, hidden_size=24, num_layers=2, dropout=0.0))
    for p in model.parameters():
        p.data.normal_(0.0, 0.5)
    return model.eval(), vocab


def texts(model, vocab, n=80, num_samples=1, seed=5, **kw):
    return [s.text for s in generate_batch(model, vocab, n, num_samples=num_samples, prime="to be",
                                           decoding=Decoding(**kw), seed=seed)]


def test_top_k_1_and_epsilon_1_equal_greedy(peaky):
    model, vocab = peaky
    greedy = texts(model, vocab, greedy=True)
    assert texts(model, vocab, top_k=1) == greedy
    assert texts(model, vocab, top_k=1, temperature=2.0, seed=9) == greedy
    assert texts(model, vocab, epsilon=1.0) == greedy
    assert texts(model, vocab, epsilon=1.0, temperature=1.5, seed=11) == greedy
    assert texts(model, vocab, epsilon=0.5) != greedy  # half the steps are draws


def test_top_p_1_and_top_k_vocab_equal_plain_sampling(peaky):
    model, vocab = peaky
    for t in (1.0, 0.7):
        plain = texts(model, vocab, temperature=t, num_samples=3)
        assert texts(model, vocab, temperature=t, top_p=1.0, num_samples=3) == plain
        assert texts(model, vocab, temperature=t, top_k=len(vocab), num_samples=3) == plain
        assert texts(model, vocab, temperature=t, top_k=len(vocab) + 10, num_samples=3) == plain
        assert texts(model, vocab, temperature=t, top_k=3, num_samples=3) != plain


def test_filters_restrict_the_distribution():
    logits = np.array([[3.0, 2.0, 1.0, 0.0, -1.0]])
    probs = sampling_distribution(logits, Decoding(top_k=2))
    assert (probs[0, 2:] == 0).all() and probs[0, :2].sum() == pytest.approx(1.0)
    full = sampling_distribution(logits, Decoding())[0]
    nucleus = sampling_distribution(logits, Decoding(top_p=0.8))[0]
    kept = np.flatnonzero(nucleus)
    assert list(kept) == [0, 1]  # 0.665 < 0.8 <= 0.665 + 0.245: the smallest prefix reaching 0.8
    assert nucleus[kept] == pytest.approx(full[kept] / full[kept].sum())
    cold = sampling_distribution(logits * 1e3, Decoding(temperature=1e-4))
    assert np.isfinite(cold).all() and cold[0, 0] == 1.0


def test_tiny_temperature_is_finite_everywhere(peaky):
    model, vocab = peaky
    greedy = generate(model, vocab, 100, prime="to", greedy=True)
    for t in (1e-4, 1e-40, 1e-300):
        for extra in ({}, {"top_k": 5}):  # the fast path and the filtering path
            (s,) = generate_batch(model, vocab, 100, prime="to", decoding=Decoding(temperature=t, **extra), seed=3)
            assert all(math.isfinite(v) for v in (s.logprob, s.nll, s.entropy)), (t, extra)
            assert s.text == greedy, (t, extra)


def test_repetition_penalty_breaks_greedy_loops(peaky):
    model, vocab = peaky
    greedy = generate(model, vocab, 120, prime="to", greedy=True)
    assert len(set(greedy[-60:])) <= 3  # this model loops under greedy decoding
    window = 10  # no character may come back within the window (the vocabulary has 17)
    guarded = generate(model, vocab, 120, prime="to", greedy=True, repetition_penalty=1e30, repetition_window=window)
    assert all(len(set(guarded[i : i + window])) == window for i in range(len(guarded) - window))


def test_beam_width_1_equals_greedy_and_scores_are_log_probabilities(peaky):
    model, vocab = peaky
    greedy = generate(model, vocab, 60, prime="to be", greedy=True)
    (one,) = beam_search(model, vocab, 60, width=1, prime="to be")
    assert one.text == greedy
    beams = beam_search(model, vocab, 60, width=6, num_return=3, prime="to be")
    assert len(beams) == 3 and len({b.text for b in beams}) == 3
    per_char = [b.logprob_per_char for b in beams]
    assert per_char == sorted(per_char, reverse=True)
    for b in beams:  # the reported log-probability is the model's, recomputed independently
        assert b.logprob == pytest.approx(-score_text(model, vocab, b.text, context="to be").total_nats, abs=1e-3)


def test_stop_string_spanning_several_characters_ends_the_text(peaky):
    model, vocab = peaky
    free = texts(model, vocab, 200, num_samples=4, seed=20, temperature=1.0)
    stop = free[1][50:53]  # three characters the second sample writes at position 50 (or earlier)
    end = free[1].index(stop) + len(stop)
    samples = generate_batch(model, vocab, 200, num_samples=4, prime="to be", seed=20, stop=[stop, "ququq"])
    assert samples[1].text == free[1][:end] and samples[1].stopped and samples[1].num_chars == end
    for s, f in zip(samples, free, strict=True):  # the others stop at their own first match, or not at all
        cut = f.index(stop) + len(stop) if stop in f else len(f)
        assert s.text == f[:cut] and s.stopped == (stop in f)
    (alone,) = generate_batch(model, vocab, 200, prime="to be", seed=21, stop=[stop])
    assert alone.text == samples[1].text
    (beam,) = beam_search(model, vocab, 200, width=1, prime="to be", stop=[stop[-2:]])
    greedy = generate(model, vocab, 200, prime="to be", greedy=True)
    if stop[-2:] in greedy:
        assert beam.text == greedy[: greedy.index(stop[-2:]) + 2] and beam.stopped


@pytest.mark.parametrize("options", [
    {"temperature": 0.9},
    {"temperature": 1.3, "top_k": 4},
    {"top_p": 0.8, "epsilon": 0.3},
    {"temperature": 0.6, "repetition_penalty": 3.0, "repetition_window": 7},
])
def test_batched_samples_equal_the_same_samples_one_by_one(peaky, options):
    model, vocab = peaky
    batch = generate_batch(model, vocab, 150, num_samples=5, prime="to be", decoding=Decoding(**options), seed=40,
                           stop=["e, "])
    for i, s in enumerate(batch):
        (alone,) = generate_batch(model, vocab, 150, prime="to be", decoding=Decoding(**options), seed=40 + i,
                                  stop=["e, "])
        assert (s.text, s.seed, s.stopped) == (alone.text, alone.seed, alone.stopped)
        assert s.logprob == pytest.approx(alone.logprob, rel=1e-5) and s.nll == pytest.approx(alone.nll, rel=1e-5)


def test_sample_statistics_are_the_model_log_probabilities(peaky):
    model, vocab = peaky
    (s,) = generate_batch(model, vocab, 120, prime="to be", decoding=Decoding(temperature=1.0), seed=8)
    scored = score_text(model, vocab, s.text, context="to be")
    assert s.nll == pytest.approx(scored.nats_per_char, abs=1e-5)
    assert s.logprob == pytest.approx(-scored.total_nats, abs=1e-3)  # at T=1 sampling = model distribution
    assert 0 < s.entropy < math.log(len(vocab))


def test_stream_is_the_same_text_in_constant_memory(peaky):
    model, vocab = peaky
    assert "".join(stream(model, vocab, 300, seed=2)) == generate(model, vocab, 300, seed=2)

    def peak(n):
        tracemalloc.start()
        for _ in stream(model, vocab, n, seed=2, decoding=Decoding(temperature=0.9)):
            pass
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    short, long = peak(1_000), peak(12_000)
    assert long < short + 32_000  # keeping the text would cost ~100 kB more (a list of 11k more str pointers)


def test_inspect_shows_the_distribution_the_sample_was_drawn_from(peaky):
    model, vocab = peaky
    d = Decoding(temperature=0.8, top_k=3)
    views = list(inspect_steps(model, vocab, 30, top=5, prime="to be", decoding=d, seed=6, context_chars=8))
    assert "".join(v.chosen for v in views) == generate(model, vocab, 30, prime="to be", temperature=0.8, top_k=3, seed=6)
    for v in views:
        probs = [p for _, p in v.candidates]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0)
        assert probs[3:] == [0.0, 0.0] and v.chosen in dict(v.candidates) and len(v.context) <= 8
    assert views[0].context == "to be" and views[3].context.endswith(views[2].chosen)


def test_unescape_reads_stop_strings_like_python():
    assert unescape(r"\n\n") == "\n\n"
    assert unescape(r"a\tb\\n\x41\u00e9 señor") == "a\tb\\nAé señor"
    for bad in ("\\", r"\q", r"\x4"):
        with pytest.raises(CharRNNError):
            unescape(bad)


@pytest.mark.parametrize("options, message", [
    ({"top_k": 0}, "top-k"), ({"top_p": 0.0}, "top-p"), ({"top_p": 1.5}, "top-p"),
    ({"temperature": -1}, "temperature"), ({"epsilon": 1.5}, "epsilon"), ({"repetition_penalty": 0.5}, "penalty"),
])
def test_bad_decoding_options_are_one_clear_error(options, message):
    with pytest.raises(CharRNNError, match=message):
        Decoding(**options)


def test_bad_generation_arguments_are_clear(peaky):
    model, vocab = peaky
    with pytest.raises(CharRNNError, match="absurdly large"):
        generate(model, vocab, 10**12)
    with pytest.raises(CharRNNError, match="number of samples"):
        generate_batch(model, vocab, 5, num_samples=0)
    with pytest.raises(CharRNNError, match="can never occur"):
        generate(model, vocab, 5, stop=["Z"])
    with pytest.raises(CharRNNError, match="beam width"):
        beam_search(model, vocab, 5, width=0)


def test_inspect_under_greedy_shows_the_models_distribution(peaky):
    model, vocab = peaky
    views = list(inspect_steps(model, vocab, 10, top=3, prime="to be", decoding=Decoding(greedy=True)))
    assert "".join(v.chosen for v in views) == generate(model, vocab, 10, prime="to be", greedy=True)
    for v in views:
        assert v.chosen == v.candidates[0][0] and 0 < v.chosen_prob < 1 and v.candidates[1][1] > 0


def test_a_large_batch_on_the_torch_engine_equals_samples_one_by_one(peaky):
    model, vocab = peaky
    batch = generate_batch(model, vocab, 60, num_samples=64, prime="to be", decoding=Decoding(temperature=0.9), seed=3)
    for i in (0, 17, 63):  # batch 64 runs on torch + oneDNN, batch 1 on NumPy
        (alone,) = generate_batch(model, vocab, 60, prime="to be", decoding=Decoding(temperature=0.9), seed=3 + i)
        assert batch[i].text == alone.text
