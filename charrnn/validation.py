"""A separate validation text (`charrnn train --val-file`): files or a directory scored at every
evaluation instead of a split of the corpus, which is then trained on whole.

Characters the training text lacks are handled as `charrnn score --unknown` does: "error" names
them, "skip" drops them with a warning counting them. The files are recorded in the run's
metadata, so a resumed run validates on the same text.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .corpus_cache import DEFAULT_SEPARATOR, resolve_inputs
from .data import id_dtype, read_text
from .errors import CharRNNError
from .vocab import Vocab

UNKNOWN_CHOICES = ("error", "skip")


@dataclass(frozen=True)
class ValidationFiles:
    """The validation text: `files` joined with `separator`, as a corpus's files are."""

    files: tuple[Path, ...]
    encoding: str = "utf-8"
    separator: str = DEFAULT_SEPARATOR
    unknown: str = "error"  # characters the training vocabulary lacks: "error" or "skip"

    def __post_init__(self) -> None:
        if self.unknown not in UNKNOWN_CHOICES:
            raise CharRNNError(f"unknown must be one of {', '.join(UNKNOWN_CHOICES)}, got {self.unknown!r}")
        if not self.files:
            raise CharRNNError("give at least one validation file")

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike], **options: Any) -> ValidationFiles:
        """Files, directories and globs, found as the corpus's are (corpus_cache.resolve_inputs)."""
        files, _ = resolve_inputs(paths, options.get("encoding", "utf-8"))
        return cls(tuple(f.resolve() for f in files), **options)

    def to_meta(self) -> dict[str, Any]:
        return {"files": [str(f) for f in self.files], "encoding": self.encoding, "separator": self.separator,
                "unknown": self.unknown}

    @classmethod
    def from_meta(cls, data: Any) -> ValidationFiles | None:
        """What to_meta wrote (None when the run validated on a split)."""
        if data is None:
            return None
        try:
            return cls(tuple(Path(f) for f in data["files"]), data["encoding"], data["separator"], data["unknown"])
        except (KeyError, TypeError):
            raise CharRNNError(f"the run's validation record is damaged: {data!r}") from None

    def encode(self, vocab: Vocab, log: Callable[[dict[str, Any]], None] | None = None) -> np.ndarray:
        """The validation ids under the training vocabulary (held in memory: validation texts are small)."""
        text = self.separator.join(read_text(f, encoding=self.encoding) for f in self.files)
        lacking = vocab.unknown(text)
        if lacking and self.unknown == "error":
            shown = "".join(lacking[:20]) + ("..." if len(lacking) > 20 else "")
            raise CharRNNError(f"the validation text contains {len(lacking)} character(s) the training text lacks: "
                               f"{shown!r}; use --val-unknown skip to drop them")
        ids = np.asarray(vocab.encode(text, unknown="skip"), dtype=id_dtype(len(vocab)))
        if lacking and log is not None:
            log({"event": "warning", "message": f"skipped {len(text) - len(ids):,} validation character(s) the "
                 f"training text lacks ({len(lacking)} distinct: {''.join(lacking[:20])!r})"})
        return ids
