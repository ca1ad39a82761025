"""charrnn: character-level RNN/LSTM text generation (Karpathy's char-rnn, rebuilt in PyTorch).

The torch-free pieces are imported here; the rest load on first use so `import charrnn` and
`charrnn --help` stay instant.
"""

from __future__ import annotations

import importlib
import sys
import types
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


class _Package(types.ModuleType):
    """`charrnn.train` is the function, whatever was imported before.

    Importing a submodule binds it as an attribute of the package (`import charrnn.train` sets
    `charrnn.train` to the module), which would hide the lazy name of the same spelling from then on:
    `from charrnn import train` would give the module. The binding is skipped for the public names,
    so they always resolve through `__getattr__`; the submodule stays importable by its full name
    (`from charrnn.train import Trainer`, `importlib.import_module("charrnn.train")`).
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = ["CharRNNError", "ModelConfig", "TrainConfig", "Vocab", "__version__", *_LAZY]
