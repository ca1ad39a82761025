import dataclasses

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_shapes_and_explicit_state(kind):
    cfg = ModelConfig(vocab_size=11, model=kind, embed_dim=6, hidden_size=10, num_layers=3, dropout=0.1)
    model = CharRNN(cfg).eval()
    idx = torch.randint(0, 11, (4, 7))
    logits, hidden = model(idx)
    assert logits.shape == (4, 7, 11)
    states = hidden if kind == "lstm" else (hidden,)
    for h in states:
        assert h.shape == (3, 4, 10)
    # None is the zero state, and the state is returned rather than kept on the module
    logits0, _ = model(idx, model.init_hidden(4))
    torch.testing.assert_close(logits, logits0)
    again, _ = model(idx)
    torch.testing.assert_close(logits, again)


def test_lstm_forget_gate_bias_is_one():
    model = CharRNN(ModelConfig(vocab_size=5, hidden_size=8, num_layers=2))
    total = model.rnn.bias_ih_l1 + model.rnn.bias_hh_l1
    assert torch.all(total[8:16] == 1.0)


def test_tied_weights_share_storage():
    model = CharRNN(ModelConfig(vocab_size=9, embed_dim=12, hidden_size=12, tie_weights=True))
    assert model.head.weight.data_ptr() == model.embed.weight.data_ptr()
    with pytest.raises(CharRNNError, match="embed_dim == hidden_size"):
        ModelConfig(embed_dim=8, hidden_size=12, tie_weights=True)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_weight_drop_masks_the_recurrent_weights_in_training_only(kind):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, model=kind, embed_dim=6, hidden_size=10, num_layers=2, dropout=0.0,
                                weight_drop=0.5))
    plain = CharRNN(ModelConfig(vocab_size=11, model=kind, embed_dim=6, hidden_size=10, num_layers=2, dropout=0.0))
    plain.load_state_dict(model.state_dict())  # the same weights; only the training-time mask differs
    idx = torch.randint(0, 11, (4, 7))
    # Evaluation (and so sampling) uses the whole, unmasked weights.
    torch.testing.assert_close(model.eval()(idx)[0], plain.eval()(idx)[0])
    # Training draws a fresh mask each forward, and the gradient still reaches the masked weights.
    first, _ = model.train()(idx)
    second, _ = model(idx)
    assert not torch.allclose(first, second)
    first.square().sum().backward()
    assert model.rnn.weight_hh_l0.grad is not None and model.rnn.weight_hh_l0.grad.abs().sum() > 0
    # Only the recurrent weights are masked: with the mask off, training equals evaluation (no dropout).
    model.config = dataclasses.replace(model.config, weight_drop=0.0)
    torch.testing.assert_close(model.train()(idx)[0], plain.eval()(idx)[0])
    with pytest.raises(CharRNNError, match="weight_drop"):
        ModelConfig(weight_drop=1.0)
