"""charrnn: character-level RNN/LSTM text generation (Karpathy's char-rnn, rebuilt in PyTorch).

The torch-free pieces are imported here; the rest load on first use so `import charrnn` and
`charrnn --help` stay instant.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from .config import ModelConfig, TrainConfig
from .errors import CharRNNError
from .vocab import Vocab

try:
    __version__ = version("charrnn")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.1.0"

_LAZY = {
    "CharRNN": "model",
    "train": "train",
    "resume": "train",
    "fine_tune": "train",
    "evaluate": "train",
    "generate": "sample",
    "load": "checkpoint",
    "find_latest": "checkpoint",
    "read_text": "data",
    "get_corpus": "corpora",
    "CorpusFiles": "corpus_cache",
    "EncodedCorpus": "corpus_cache",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, "get" if name == "get_corpus" else name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")


__all__ = ["CharRNNError", "ModelConfig", "TrainConfig", "Vocab", "__version__", *_LAZY]
