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
