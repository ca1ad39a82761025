"""One decoding chain: every way of generating picks each character with `Chooser.choose`.

The batch-1 branch of the chain (1-D views) must be the general one draw for draw, whatever the
logits, options and uniforms; the draws are Philox streams keyed by seed; and `charrnn inspect`
and `charrnn sample` write the same text from the same checkpoint, seed and options.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from charrnn import checkpoint
from charrnn.cli import main
from charrnn.config import ModelConfig
from charrnn.decoding import Chooser, Decoding, Draws
from charrnn.generation import Generation, generate_batch, stream
from charrnn.model import CharRNN
from charrnn.steps import inspect_steps
from charrnn.vocab import Vocab

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chains(draw):
    """Random logits (rows x vocabulary), decoding options, recent counts and uniforms."""
    rows, vocab = draw(st.integers(1, 5)), draw(st.integers(2, 70))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 40.0]))
    logits = draw(hnp.arrays(np.float32, (rows, vocab), elements=st.floats(-4, 4, width=32))) * np.float32(scale)
    options = {
        "temperature": draw(st.sampled_from([1e-30, 0.05, 0.3, 0.8, 1.0, 1.5, 4.0])),
        "top_k": draw(st.one_of(st.none(), st.integers(1, vocab + 2))),
        "top_p": draw(st.one_of(st.none(), st.floats(1e-6, 1.0))),
        "epsilon": draw(st.sampled_from([0.0, 0.0, 0.3, 1.0])),
        "repetition_penalty": draw(st.sampled_from([1.0, 1.0, 1.3, 1e6])),
    }
    recent = draw(hnp.arrays(np.int32, (rows, vocab), elements=st.integers(0, 2)))
    seed = draw(st.integers(0, 2**64 - 1))
    return logits, options, recent, seed


@PROPERTY
@given(chains())
# Found by a random search: at T=0.05 exp() rounds both weights to 1.0, and top-p kept the other
# character, so ε-greedy's argmax took one the filtered distribution gave probability 0.
@example(chain=(np.array([[-4.1457892e-14, 0.0]], dtype=np.float32),
                {"temperature": 0.05, "top_k": None, "top_p": 0.5, "epsilon": 0.3, "repetition_penalty": 1.0},
                np.array([[0, 0]], dtype=np.int32), 1))
def test_the_batch_1_branch_is_the_general_chain_draw_for_draw(chain):
    logits, options, recent, seed = chain
    rows, vocab = logits.shape
    for top in ({}, {"top_k": None, "top_p": None}):  # as drawn, and unfiltered (where the 1-D branch runs)
        decoding = Decoding(**{**options, **top})
        seeds = np.arange(seed, seed + rows, dtype=np.uint64) if seed + rows < 2**64 else np.zeros(rows, np.uint64)
        u, u_eps = Draws(seeds, 0).at(0), Draws(seeds, 1).at(0)
        batched = Chooser(decoding, vocab).choose(logits, u, u_eps, recent)
        chooser = Chooser(decoding, vocab)
        for r in range(rows):
            one = chooser.choose(logits[r : r + 1], u[r : r + 1], u_eps[r : r + 1], recent[r : r + 1])
            assert one.tolist() == [batched[r]], (decoding, r)
            probs = chooser.distribution(logits[r : r + 1], recent[r : r + 1])[0]
            assert probs[one[0]] > 0 and abs(probs.sum() - 1) < 1e-6  # never a character it could not draw
        if rows == 1 or decoding.is_greedy:
            continue
        # the general branch itself, row by row, on the draw's boundaries: u * total exactly at a cumulative sum
        general = Chooser(decoding, vocab)
        x = general.penalised(logits, recent)
        for r in range(rows):
            general.choose(logits[r : r + 1], np.zeros(1), np.ones(1), recent[r : r + 1])
            cdf = np.add.accumulate(general.weights[0])
            for j in range(0, vocab, max(1, vocab // 7)):
                for b in (cdf[j] / cdf[-1], np.nextafter(cdf[j] / cdf[-1], 0), 0.0, np.nextafter(1.0, 0)):
                    ub = np.array([b])
                    if decoding.top_k is None and decoding.top_p is None:
                        assert general._draw_one(x[r], ub[0]).tolist() == general._draw(x[r : r + 1], ub).tolist()


def test_draws_are_philox_streams_keyed_by_seed_and_stream():
    seeds = np.array([7, 8, 2**64 - 1], dtype=np.uint64)
    draws = Draws(seeds, 0)
    block = np.stack([draws.at(step) for step in range(600)])  # crosses two block boundaries
    for j, seed in enumerate(seeds.tolist()):
        expected = np.random.Generator(np.random.Philox(key=seed)).random(600)
        assert np.array_equal(block[:, j], expected)  # a sample's draws depend on its seed alone
    coin = Draws(seeds[:1], 1).at(0)[0]
    assert coin == np.random.Generator(np.random.Philox(key=7 | 1 << 64)).random() and coin != block[0, 0]


# ----------------------------------------------------------------------------------------------
# inspect and sample write the same text


TEXT = "abcdefghij klmno\nRST,.;!?\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(11)
    vocab = Vocab.from_text(TEXT)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embed_dim=4, hidden_size=8, num_layers=1, dropout=0.0))
    for p in model.parameters():
        p.data.normal_(0.0, 0.8)  # varied, confident predictions
    path = tmp_path_factory.mktemp("run")
    checkpoint.save(path / checkpoint.BEST, model, {"model_config": model.config.to_dict(), "vocab": vocab.to_list()})
    return path


@pytest.fixture(scope="module")
def loaded(run_dir):
    ckpt = checkpoint.load(run_dir)
    return ckpt.model, ckpt.vocab


SETTINGS = [
    {"temperature": 0.3}, {"temperature": 0.8}, {"temperature": 1.0}, {"temperature": 1.5},
    {"temperature": 0.8, "top_k": 6, "top_p": 0.9, "epsilon": 0.2, "repetition_penalty": 1.3},
    {"temperature": 1.5, "top_k": 12, "repetition_penalty": 2.0, "repetition_window": 5},
]


def same_texts(model, vocab, options, length):
    """What the two commands call: inspect's Generation (showing each step's distribution) and
    sample's (keeping the texts), 64 seeds batched on the engine a single sample uses."""
    decoding = Decoding(**options)
    sampled = generate_batch(model, vocab, length, num_samples=64, prime="RST", decoding=decoding, seed=99,
                             backend="numpy")
    shown = Generation(model, vocab, length, num_samples=64, prime="RST", decoding=decoding, seed=99,
                       keep_text=False, want_probs=True, backend="numpy")
    texts: list[list[str]] = [[] for _ in range(64)]
    for chars in shown:
        for i, c in enumerate(chars):
            texts[i].append(c)
    for i in range(64):
        assert "".join(texts[i]) == sampled[i].text, (decoding.strategy, i)


@pytest.mark.slow  # 64 x 20,000 characters x 6 settings, twice: ~3 minutes on 2 busy cores
@pytest.mark.parametrize("options", SETTINGS, ids=lambda o: Decoding(**o).strategy)
def test_inspect_and_sample_choose_the_same_64_texts_of_20000_characters(loaded, options):
    same_texts(*loaded, options, 20_000)


@pytest.mark.parametrize("options", SETTINGS, ids=lambda o: Decoding(**o).strategy)
def test_inspect_and_sample_choose_the_same_64_texts(loaded, options):
    same_texts(*loaded, options, 600)  # the default suite's share of the test above


@pytest.mark.parametrize("options", [SETTINGS[1], SETTINGS[4]], ids=["plain", "filtered"])
def test_inspect_steps_and_stream_write_the_same_text(loaded, options):
    model, vocab = loaded
    decoding = Decoding(**options)
    for seed in (1, 2**63 + 5):
        streamed = "".join(stream(model, vocab, 1500, prime="RST", decoding=decoding, seed=seed))
        views = "".join(v.chosen for v in inspect_steps(model, vocab, 1500, top=3, prime="RST", decoding=decoding,
                                                        seed=seed))
        assert views == streamed


@pytest.mark.parametrize("args", [["-t", "0.8"], ["-t", "1.5", "--top-k", "6", "--top-p", "0.9", "--epsilon", "0.2",
                                                   "--repetition-penalty", "1.3"]])
def test_charrnn_inspect_and_sample_print_the_same_text(run_dir, args):
    common = ["-c", str(run_dir), "-n", "400", "--seed", "5", "--prime", "RST", *args]
    runner = CliRunner()
    sampled = runner.invoke(main, ["sample", *common, "--no-echo-prime"])
    inspected = runner.invoke(main, ["inspect", *common, "--csv"])
    assert sampled.exit_code == 0 and inspected.exit_code == 0, sampled.output + inspected.output
    rows = list(csv.reader(io.StringIO(inspected.stdout)))[1:]
    assert "".join(r[2] for r in rows) + "\n" == sampled.stdout
    assert sampled.stderr == inspected.stderr  # the same "seed 5, <strategy>" line
