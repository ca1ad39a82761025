"""Run folders for the playground's tests: tiny random models saved as `charrnn train` saves them."""

from __future__ import annotations

from pathlib import Path

import torch

from charrnn.checkpoint import save, write_meta
from charrnn.config import ModelConfig
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

TEXT = "to be or not to be, that is the question — señor\nROMEO: wherefore art thou\n"


def make_run(root: Path, name: str, *, seed: int = 1, kind: str = "lstm", layers: int = 2, hidden: int = 24,
             val_loss: float = 1.5) -> Path:
    """A run folder with best.pt and meta.json holding a small model with large random weights
    (confident, varied predictions: sampling settings visibly change the text)."""
    torch.manual_seed(seed)
    vocab = Vocab.from_text(TEXT)
    config = ModelConfig(model=kind, vocab_size=len(vocab), embed_dim=8, hidden_size=hidden, num_layers=layers,
                         dropout=0.0)
    model = CharRNN(config)
    for p in model.parameters():
        p.data.normal_(0.0, 0.5)
    meta = {"model_config": config.to_dict(), "vocab": vocab.to_list(), "corpus": {"name": "play.txt"},
            "best_val_loss": val_loss, "step": 100, "updated": "2026-12-05T08:00:00+00:00"}
    run = root / name
    run.mkdir(parents=True)
    save(run / "best.pt", model.eval(), meta)
    write_meta(run, meta)
    return run


def load_model(run: Path) -> tuple[CharRNN, Vocab]:
    from charrnn.checkpoint import load

    ckpt = load(run)
    return ckpt.model, ckpt.vocab
