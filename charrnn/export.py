"""Export a trained model for other runtimes: safetensors weights, or an ONNX generation step.

Both write `config.json` beside the weights: the model config, the vocabulary as a list of
characters (id i is `vocab[i]`), the charrnn version and this format's version, so the files are
usable without charrnn (README, "Export"). Needs the `export` extra: pip install 'charrnn[export]'.

  safetensors: `model.safetensors`, the state_dict under charrnn's names (`embed.weight`,
               `rnn.weight_ih_l0`, ..., `head.weight`, `head.bias`): nn.Embedding, nn.LSTM/GRU/RNN
               (batch_first) and nn.Linear load them directly.
  onnx:        `model.onnx`, one generation step: ids [batch] (int64) and the hidden state
               `h` [layers, batch, hidden] (and `c` for an LSTM) in; `logits` [batch, vocab] and
               `h_out` (`c_out`) out. Feed the outputs back in for the next character.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import Checkpoint, atomic_write
from .errors import CharRNNError

FORMATS = ("safetensors", "onnx")
EXPORT_FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
INSTALL_HINT = "pip install 'charrnn[export]' (or: pip install safetensors onnx onnxruntime)"


def _need(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise CharRNNError(f"{what} needs the {module} package: {INSTALL_HINT}")


def export_config(ckpt: Checkpoint) -> dict[str, Any]:
    """What config.json holds: enough to rebuild the network and decode its ids without charrnn
    (the same for both formats, so they can share a folder)."""
    from . import __version__

    lstm = ckpt.model_config.model == "lstm"
    return {
        "format": "charrnn-export",
        "format_version": EXPORT_FORMAT_VERSION,
        "charrnn_version": __version__,
        "model_config": ckpt.model_config.to_dict(),
        "vocab": ckpt.vocab.to_list(),
        "source": {"checkpoint": str(ckpt.path), "step": ckpt.meta.get("step"),
                   "best_val_loss": ckpt.meta.get("best_val_loss")},
        "onnx": {"inputs": ["ids", "h", *(["c"] if lstm else [])],
                 "outputs": ["logits", "h_out", *(["c_out"] if lstm else [])]},
    }


def _write_config(out_dir: Path, config: dict[str, Any]) -> None:
    text = json.dumps(config, ensure_ascii=False, indent=1)
    atomic_write(out_dir / CONFIG_NAME, lambda f: f.write(text), mode="w")


def export_safetensors(ckpt: Checkpoint, out_dir: str | os.PathLike) -> Path:
    """`model.safetensors` + `config.json` in `out_dir` (created); returns the weights' path."""
    _need("safetensors", "--format safetensors")
    from safetensors.torch import save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Tied weights share one tensor, which safetensors refuses: each name gets its own copy.
    state = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in ckpt.model.state_dict().items()}
    data = save(state, metadata={"format": "pt"})
    path = out_dir / "model.safetensors"
    atomic_write(path, lambda f: f.write(data))
    _write_config(out_dir, export_config(ckpt))
    return path


class _Step(nn.Module):
    """One generation step of a CharRNN with the hidden state as plain tensors (ONNX has no tuples in)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.lstm = model.config.model == "lstm"

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None) -> Any:
        logits, hidden = self.model(ids.unsqueeze(1), (h, c) if self.lstm else h)
        if self.lstm:
            return logits[:, 0], hidden[0], hidden[1]
        return logits[:, 0], hidden


def export_onnx(ckpt: Checkpoint, out_dir: str | os.PathLike, opset: int = 17) -> Path:
    """`model.onnx` (one generation step, any batch size) + `config.json` in `out_dir`; returns the graph's path."""
    _need("onnx", "--format onnx")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = ckpt.model.to("cpu").float().eval()
    cfg = ckpt.model_config
    step = _Step(model).eval()
    batch = 2  # any batch runs: the axis is dynamic
    ids = torch.zeros(batch, dtype=torch.long)
    h = torch.zeros(cfg.num_layers, batch, cfg.hidden_size)
    lstm = cfg.model == "lstm"
    args = (ids, h, torch.zeros_like(h)) if lstm else (ids, h)
    inputs, outputs = export_config(ckpt)["onnx"].values()
    axes = {"ids": {0: "batch"}, "logits": {0: "batch"}, **{n: {1: "batch"} for n in (*inputs[1:], *outputs[1:])}}
    buffer = io.BytesIO()
    # The TorchScript exporter (dynamo=False): the dynamo one needs onnxscript, and this graph is a
    # plain trace. Its deprecation and tracer notes are about this choice, not about the model.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(step, args, buffer, dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=opset)
    path = out_dir / "model.onnx"
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    _write_config(out_dir, export_config(ckpt))
    return path


def export(ckpt: Checkpoint, out_dir: str | os.PathLike, fmt: str) -> Path:
    """Export `ckpt` in `fmt` ("safetensors" or "onnx") into `out_dir`."""
    if fmt not in FORMATS:
        raise CharRNNError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return export_safetensors(ckpt, out_dir) if fmt == "safetensors" else export_onnx(ckpt, out_dir)
