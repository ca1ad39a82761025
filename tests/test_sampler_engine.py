"""The inference step engines give the torch model's logits and states, step after step."""

import numpy as np
import pytest
import torch

from charrnn.config import MODEL_TYPES, ModelConfig
from charrnn.engine import NumpyEngine, TorchEngine, make_engine
from charrnn.generation import NUMPY_WARM_MAX, warm
from charrnn.model import _CORES, CharRNN
from charrnn.sample import Decoding, generate_batch
from charrnn.vocab import Vocab


def random_model(kind, layers, hidden=9, vocab=11, embed=6, tie=False):
    torch.manual_seed(layers * 7 + len(kind))
    config = ModelConfig(vocab_size=vocab, model=kind, embed_dim=hidden if tie else embed, hidden_size=hidden,
                         num_layers=layers, dropout=0.0, tie_weights=tie)
    model = CharRNN(config).eval()
    for p in model.parameters():
        p.data.normal_(0.0, 0.5)  # large weights: saturating gates exercise every nonlinearity
    return model


def test_the_registry_is_what_the_parity_test_covers():
    assert set(_CORES) == set(MODEL_TYPES)  # a new model type is in the parametrisation below


@pytest.mark.parametrize("engine_class", [NumpyEngine, TorchEngine])
@pytest.mark.parametrize("kind", sorted(_CORES))  # every model type of the registry
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("batch", [1, 4])
def test_engine_steps_equal_the_torch_model(engine_class, kind, layers, tie, batch):
    model = random_model(kind, layers, tie=tie)
    assert NumpyEngine.computes(model)  # the engine claims every configuration the registry builds
    ids = torch.randint(0, 11, (batch, 25), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, start = model(ids[:, :5])  # a non-zero starting state, as after a prime
        expected, end = model(ids[:, 5:], start)
    engine = engine_class(model, batch)
    engine.set_hidden(start)
    got = np.stack([engine.step(ids[:, t].numpy()).copy() for t in range(5, 25)], axis=1)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-5)
    hidden = engine.get_hidden()
    for a, b in zip(hidden if kind == "lstm" else (hidden,), end if kind == "lstm" else (end,), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(_CORES))
@pytest.mark.parametrize("prime_len", [1, NUMPY_WARM_MAX, NUMPY_WARM_MAX + 1])  # NumPy steps, then the forward
def test_warming_a_prime_gives_the_models_own_state_whichever_way_it_runs(kind, prime_len):
    model = random_model(kind, 2)
    ids = [(7 * t + 3) % 11 for t in range(prime_len)]
    with torch.no_grad():
        _, start = model(torch.tensor([[4, 1, 9]]))
        expected, end = model(torch.tensor([ids]), start)
    logits, hidden = warm(model, ids, start)
    torch.testing.assert_close(logits, expected[0, -1], rtol=1e-5, atol=1e-5)
    for a, b in zip(hidden if kind == "lstm" else (hidden,), end if kind == "lstm" else (end,), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_a_generation_with_a_short_prime_stays_in_one_runtime(monkeypatch):
    # The idle threads of the runtime a generation leaves keep spinning on the cores the other one
    # needs: a torch forward per call cost batch-1 sampling (NumPy) ~5%, and NumPy steps per call
    # cost batch-64 sampling (torch) ~40% on a quiet machine (benchmarks/contention.py).
    vocab = Vocab.from_text("abcdefghijk")
    model = random_model("lstm", 2)
    decoding = Decoding(temperature=1.0)

    def forward(*args, **kwargs):
        raise AssertionError("the model's torch forward ran")

    with monkeypatch.context() as patch:
        patch.setattr(model, "forward", forward)
        (sample,) = generate_batch(model, vocab, 30, prime="abcabcab", decoding=decoding, seed=3)
        assert len(sample.text) == 30
        with pytest.raises(AssertionError, match="torch forward ran"):  # a long prime does take the forward
            generate_batch(model, vocab, 30, prime="abc" * NUMPY_WARM_MAX, decoding=decoding, seed=3)

    def numpy_step(*args, **kwargs):
        raise AssertionError("a NumPy step ran")

    monkeypatch.setattr(NumpyEngine, "step", numpy_step)
    assert isinstance(make_engine(model, 64), TorchEngine)
    samples = generate_batch(model, vocab, 30, num_samples=64, prime="abcabcab", decoding=decoding, seed=3)
    assert [len(s.text) for s in samples] == [30] * 64


def test_tied_weights_and_row_selection():
    model = random_model("lstm", 2, hidden=8, tie=True)
    engine = NumpyEngine(model, 3)
    engine.set_hidden(model.init_hidden(1))  # batch 1 state broadcast to every row
    first = engine.step(np.array([1, 2, 3])).copy()
    engine.select(np.array([2, 2, 0]))  # reorder with a repeat, as beam search does
    after = engine.step(np.array([4, 5, 6])).copy()
    with torch.no_grad():
        ref_first, hidden = model(torch.tensor([[1], [2], [3]]))
        hidden = tuple(h[:, [2, 2, 0]] for h in hidden)
        ref_after, _ = model(torch.tensor([[4], [5], [6]]), hidden)
    torch.testing.assert_close(torch.from_numpy(first), ref_first[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(after), ref_after[:, 0], rtol=1e-5, atol=1e-5)


def test_make_engine_picks_numpy_on_cpu():
    model = random_model("gru", 1)
    assert isinstance(make_engine(model, 2), NumpyEngine)
    assert isinstance(make_engine(model, 2, backend="torch"), TorchEngine)
    with pytest.raises(ValueError):
        make_engine(model, 2, backend="jax")


def test_folded_weights_follow_the_model_when_it_changes():
    model = random_model("lstm", 2)
    ids = np.array([1, 2])
    first = NumpyEngine(model, 2).step(ids).copy()
    assert np.array_equal(NumpyEngine(model, 2).step(ids), first)  # cached fold, same answer
    with torch.no_grad():
        model.head.bias.add_(1.0)  # an in-place update, as an optimizer step makes
    np.testing.assert_allclose(NumpyEngine(model, 2).step(ids), first + 1.0, rtol=1e-5, atol=1e-5)
    model.load_state_dict(random_model("lstm", 2, hidden=9).state_dict())
    with torch.no_grad():
        expected, _ = model(torch.from_numpy(ids).view(2, 1))
    np.testing.assert_allclose(NumpyEngine(model, 2).step(ids), expected[:, 0].numpy(), rtol=1e-5, atol=1e-5)


def test_engine_choice_on_cpu_follows_the_measurements():
    narrow, wide = random_model("lstm", 1, hidden=16), random_model("lstm", 1, hidden=512)
    assert isinstance(make_engine(narrow, 1), NumpyEngine) and isinstance(make_engine(wide, 1), NumpyEngine)
    assert isinstance(make_engine(narrow, 64), TorchEngine) and isinstance(make_engine(wide, 64), NumpyEngine)
    assert isinstance(make_engine(wide, 128), TorchEngine)
    assert isinstance(make_engine(random_model("gru", 1), 256), NumpyEngine)


class ShiftedHead(CharRNN):
    """A model variant the NumPy engine knows nothing about: its forward adds to one logit."""

    def forward(self, idx, hidden=None):
        logits, hidden = super().forward(idx, hidden)
        return logits + torch.nn.functional.one_hot(torch.tensor(2), self.config.vocab_size) * 50.0, hidden


def test_a_model_the_numpy_engine_does_not_compute_runs_on_its_own_forward():
    vocab = Vocab.from_text("abcdefghijk")
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=len(vocab), embed_dim=6, hidden_size=9, num_layers=2, dropout=0.0)
    variant = ShiftedHead(config).eval()
    assert not NumpyEngine.computes(variant)
    assert isinstance(make_engine(variant, 1), TorchEngine) and isinstance(make_engine(variant, 256), TorchEngine)
    with pytest.raises(ValueError, match="does not compute"):
        NumpyEngine(variant, 1)
    relu = CharRNN(ModelConfig(vocab_size=len(vocab), model="rnn", embed_dim=6, hidden_size=9, num_layers=1))
    relu.rnn.nonlinearity = "relu"
    assert not NumpyEngine.computes(relu)
    # Warming and every step go through the variant's forward: its logit +50 wins every draw.
    (sample,) = generate_batch(variant, vocab, 40, prime="abc", decoding=Decoding(temperature=1.0), seed=3)
    assert sample.text == vocab.chars[2] * 40
