"""The texts a run was trained and validated on, found through the corpus its metadata records."""

from __future__ import annotations

import os
from typing import Any

from .errors import CharRNNError


def recorded_split(meta: dict[str, Any], corpus: str | os.PathLike | None = None,
                   encoding: str = "utf-8") -> tuple[str, str]:
    """(training text, validation text) of a run: its recorded corpus (or `corpus`) cut where the
    trainer cut it -- the last `val_frac` characters validate (one file: per-file and end splits agree)."""
    from .data import read_text
    from .sweep import corpus_path

    text = read_text(corpus_path(meta, corpus), encoding=encoding)
    val_frac = (meta.get("train_config") or {}).get("val_frac", 0.1)
    if not isinstance(val_frac, (int, float)) or not 0 < val_frac < 1:
        raise CharRNNError(f"the checkpoint records an invalid val_frac {val_frac!r}")
    n_train = int(len(text) * (1.0 - val_frac))
    return text[:n_train], text[n_train:]


def text_slice(text: str, start: int = 0, length: int | None = None) -> str:
    """text[start : start + length], refusing a start past the end and an empty result with one error."""
    if start < 0 or (length is not None and length < 1):
        raise CharRNNError(f"--start must be >= 0 and --length >= 1, got start {start}, length {length}")
    if not text:
        raise CharRNNError("the text is empty: nothing to explain")
    if start >= len(text):
        raise CharRNNError(f"--start {start} is past the end of the text ({len(text):,} characters)")
    piece = text[start : None if length is None else start + length]
    if not piece:
        raise CharRNNError("the text is empty: nothing to explain")
    return piece
