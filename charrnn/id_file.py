"""A corpus's cached id file: written in one streaming pass, checked before it is trusted again.

The file holds the ids of the training part and then the validation part (uint8/16/32 by
vocabulary size); `corpus_cache.CorpusFiles.load` decides when it must be written and memory-maps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import atomic
from .cache_entry import CACHE_ENV
from .corpus_inputs import code_points, code_points_of
from .data import id_dtype
from .errors import CharRNNError
from .vocab import Vocab

_CODE_POINTS = 0x110000


def stat_key(path: Path) -> list[int]:
    """Identity and last change of a file: an id file whose key is as recorded is as it was written."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def ids_in_range(path: Path, dtype: np.dtype, vocab_size: int) -> bool:
    """Whether every id in a cached id file names a character (a damaged file would otherwise reach
    the model's embedding as an out-of-range index). A streaming pass, made only when the file changed
    since it was written; skipped where every value fits."""
    if vocab_size > np.iinfo(dtype).max:
        return True
    ids = np.memmap(path, dtype=dtype, mode="r")
    step = 1 << 26
    return all(int(ids[i : i + step].max()) < vocab_size for i in range(0, len(ids), step))


def write_id_file(path: Path, files: Sequence[Path], encoding: str, separator: str, vocab: Vocab, heads: list[int],
                  n_train: int, n_val: int) -> None:
    """Pass 2: the files' ids written straight to disk, train part first, then validation (atomic rename).

    `heads`: the characters of each file that go to training (per-file split); empty: the joined
    text in order (the "end" split), its first `n_train` ids training.
    """
    dtype = id_dtype(len(vocab))
    lut = np.zeros(_CODE_POINTS, dtype=dtype)
    lut[np.array([ord(c) for c in vocab.chars], dtype=np.int64)] = np.arange(len(vocab), dtype=dtype)
    sep_ids = lut[code_points_of(separator)] if separator else lut[:0]
    try:
        with atomic.replacing(path) as tmp, open(tmp, "r+b") as train_out, open(tmp, "r+b") as val_out:
            train_out.truncate((n_train + n_val) * dtype.itemsize)
            val_out.seek(n_train * dtype.itemsize)
            outs = {"train": train_out, "val": val_out}
            written = {"train": 0, "val": 0}
            for i, file in enumerate(files):
                head = heads[i] if heads else None  # None: "end", the joined text in order
                started: set[str] = set()
                pos = 0
                for cps in code_points(file, encoding):
                    ids = lut[cps]
                    cut = len(ids) if head is None else min(max(head - pos, 0), len(ids))
                    pos += len(ids)
                    for which, part in (("train", ids[:cut]), ("val", ids[cut:])):
                        if not len(part):
                            continue
                        if which not in started:  # a file's first piece in a stream: separator first
                            started.add(which)
                            if written[which]:
                                outs[which].write(sep_ids.tobytes())
                                written[which] += len(sep_ids)
                        outs[which].write(part.tobytes())
                        written[which] += len(part)
            expected = {"train": n_train, "val": n_val} if heads else {"train": n_train + n_val, "val": 0}
            if written != expected:
                raise CharRNNError(f"the corpus changed while it was being encoded ({len(files)} file(s) "
                                   f"from {files[0]}); run again")
    except OSError as exc:  # disk full, file too large: say which file, and the way out
        raise CharRNNError(f"could not write the encoded corpus {path}: {exc.strerror or exc}; "
                           f"choose a cache folder with room with --cache-dir or ${CACHE_ENV}") from None
