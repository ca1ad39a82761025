"""`charrnn export`: safetensors that plain PyTorch loads (the README's code, run as written) and an
ONNX generation step that onnxruntime runs to the library's logits and states."""

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import one_error_line

from charrnn.checkpoint import Checkpoint
from charrnn.cli import main
from charrnn.config import ModelConfig
from charrnn.export import export_onnx, export_safetensors
from charrnn.model import CharRNN
from charrnn.train import train
from charrnn.vocab import Vocab

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- export-safetensors-example -->"


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def readme_block() -> str:
    text = README.read_text(encoding="utf-8")
    after = text[text.index(MARKER) + len(MARKER):]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def test_the_readme_loads_an_export_with_plain_pytorch_and_predicts_as_the_library(tmp_path, tiny_text,
                                                                                   tiny_model_config, tiny_train_config,
                                                                                   monkeypatch):
    pytest.importorskip("safetensors", reason="the export extra is not installed: pip install -e '.[export]'")
    monkeypatch.chdir(tmp_path)
    model_config = ModelConfig.from_dict({**tiny_model_config.to_dict(), "num_layers": 2})
    train(tiny_text, "checkpoints/shakespeare", model_config, tiny_train_config.replace(max_steps=4, eval_interval=4))
    result = run(["export", "checkpoints/shakespeare", "--format", "safetensors"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "exports" / "shakespeare" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "exports" / "shakespeare" / "config.json").read_text(encoding="utf-8"))
    assert config["format_version"] == 1 and config["charrnn_version"] and len(config["vocab"]) > 40

    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(readme_block(), "README.md", "exec"), namespace)  # exactly the README's code
    from charrnn import load

    ckpt = load("checkpoints/shakespeare")
    ids = torch.tensor([ckpt.vocab.encode("ROMEO:")])
    with torch.no_grad():
        expected = ckpt.model(ids)[0][0, -1].softmax(-1)
    torch.testing.assert_close(namespace["probs"].detach(), expected, rtol=1e-5, atol=1e-6)
    assert printed.getvalue().startswith("{") and ckpt.vocab.chars[int(expected.argmax())] in printed.getvalue()


def _checkpoint(model_type: str, layers: int, tie: bool = False) -> Checkpoint:
    torch.manual_seed(3)
    vocab = Vocab(list("abcdefgh \n"))
    config = ModelConfig(vocab_size=len(vocab), model=model_type, embed_dim=24 if tie else 8, hidden_size=24,
                         num_layers=layers, dropout=0.2, tie_weights=tie)
    return Checkpoint(model=CharRNN(config).eval(), vocab=vocab, meta={"step": 0}, path=Path("run/best.pt"))


def test_tied_weights_export_under_both_names(tmp_path):
    pytest.importorskip("safetensors", reason="the export extra is not installed: pip install -e '.[export]'")
    from safetensors.torch import load_file

    ckpt = _checkpoint("gru", 1, tie=True)
    weights = load_file(export_safetensors(ckpt, tmp_path))
    state = ckpt.model.state_dict()
    assert weights.keys() == state.keys()
    for name, value in state.items():
        assert torch.equal(weights[name], value)


@pytest.mark.parametrize("model_type, layers", [("lstm", 2), ("gru", 2), ("rnn", 1)])
def test_onnx_step_runs_in_onnxruntime_to_the_librarys_logits_and_state(tmp_path, model_type, layers):
    pytest.importorskip("onnx", reason="the export extra is not installed: pip install -e '.[export]'")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install -e '.[export]'")
    ckpt = _checkpoint(model_type, layers)
    session = ort.InferenceSession(str(export_onnx(ckpt, tmp_path)))
    lstm = model_type == "lstm"
    batch = 3  # exported with batch 2: the axis is dynamic
    rng = np.random.default_rng(0)
    h = np.zeros((layers, batch, 24), np.float32)
    c = np.zeros_like(h)
    hidden = ckpt.model.init_hidden(batch)
    for _ in range(12):  # the state fed back, step after step
        ids = rng.integers(0, len(ckpt.vocab), batch)
        feeds = {"ids": ids.astype(np.int64), "h": h, **({"c": c} if lstm else {})}
        outputs = session.run(None, feeds)
        with torch.no_grad():
            logits, hidden = ckpt.model(torch.from_numpy(ids)[:, None], hidden)
        np.testing.assert_allclose(outputs[0], logits[:, 0].numpy(), rtol=1e-4, atol=1e-5)
        expected = [t.numpy() for t in hidden] if lstm else [hidden.numpy()]
        for got, want in zip(outputs[1:], expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        h, c = (outputs[1], outputs[2]) if lstm else (outputs[1], c)


def test_export_of_a_missing_run_is_one_error_line(tmp_path):
    one_error_line(run(["export", tmp_path / "nope", "--format", "onnx"]), "nope")
