"""Text in, tensors out: read a corpus, encode it, split it, and lay it out for truncated BPTT.

Nothing here knows about models or files other than the corpus being read.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .errors import CharRNNError
from .runtime import derived_seed
from .text_decoder import decode_bytes
from .vocab import Vocab

MAX_STREAM_BYTES = 256 << 20  # what read_text takes from a pipe or a device
STDIN = "-"  # the path that means standard input, as on most command lines (a file named "-": its full path)
STDIN_NAME = "<stdin>"  # how a text read from standard input is named in messages and run records


def is_stdin(path: str | os.PathLike | None) -> bool:
    """Whether `path` is "-", standard input."""
    return path is not None and str(path) == STDIN


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """Read a whole corpus, turning every way it can be unusable into one clear CharRNNError
    (the decoding rules are text_decoder's, which the corpus cache streams by too).

    "-" reads standard input, bounded like any pipe (at most MAX_STREAM_BYTES)."""
    if is_stdin(path):
        stdin = getattr(sys.stdin, "buffer", None)  # None: no standard input at all, or one without bytes
        if stdin is None:
            raise CharRNNError(f"{STDIN_NAME}: there is no standard input to read")
        return decode_bytes(_read_stream(stdin, STDIN_NAME), STDIN_NAME, encoding)
    path = Path(path)
    if not path.exists():
        from .corpora import hint_for_missing

        raise CharRNNError(f"{path}: no such file{hint_for_missing(path)}")
    if path.is_dir():
        raise CharRNNError(f"{path} is a directory; give a text file")
    try:
        if path.is_file():
            raw = path.read_bytes()
        else:  # a pipe or a device has no size to trust (/dev/zero never ends): read a bounded amount
            with open(path, "rb") as f:
                raw = _read_stream(f, path)
    except OSError as exc:
        raise CharRNNError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_bytes(raw, path, encoding)


def _read_stream(stream: BinaryIO, name: str | os.PathLike) -> bytes:
    """At most MAX_STREAM_BYTES of a pipe, a device or standard input: none has a size to trust
    (/dev/zero never ends)."""
    try:
        raw = stream.read(MAX_STREAM_BYTES + 1)
    except OSError as exc:
        raise CharRNNError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_STREAM_BYTES:
        raise CharRNNError(f"{name} is a pipe or a device that gives more than {MAX_STREAM_BYTES >> 20} MiB; "
                           "save the text to a file first")
    return raw


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def encode(text: str, vocab: Vocab) -> np.ndarray:
    """Text -> compact 1-D id array (uint8/16/32 by vocabulary size)."""
    return np.asarray(vocab.encode(text), dtype=id_dtype(len(vocab)))


def split(ids: np.ndarray, val_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous split by position: the last `val_frac` of the text is validation (nanoGPT's split).
    0 trains on everything (validation comes from elsewhere: --val-file)."""
    if not 0.0 <= val_frac < 1.0:
        raise CharRNNError(f"val_frac must be in (0, 1), got {val_frac}")
    n_train = int(len(ids) * (1.0 - val_frac))
    return ids[:n_train], ids[n_train:]


def stream_rows(ids: np.ndarray | torch.Tensor, batch_size: int) -> np.ndarray:
    """Cut a 1-D id sequence into `batch_size` contiguous streams, one per row: a (B, L) view.

    For the text "abcdefghijklmnopqrstuvwx" and batch_size 4:

        row 0: a b c d e f    <- window k covers columns [k*T, (k+1)*T),
        row 1: g h i j k l       so window k+1 of a row continues window k
        row 2: m n o p q r       of the same row, and the hidden state left
        row 3: s t u v w x       by window k is the right state to start k+1.

    The tail that does not fill a whole column is dropped. No int64 copy is made:

    A memory-mapped corpus stays memory-mapped, so a multi-gigabyte id file costs no more memory
    than the pages training touches; windows are widened to int64 one at a time (`to_long`).
    """
    ids = ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    length = len(ids) // batch_size
    if length == 0:
        raise CharRNNError(f"{len(ids)} characters cannot fill {batch_size} streams")
    return ids[: length * batch_size].reshape(batch_size, length)


def to_long(chunk: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A window of ids (any integer dtype, numpy or torch) as the int64 tensor embeddings take."""
    if isinstance(chunk, torch.Tensor):
        return chunk.long()
    return torch.from_numpy(np.asarray(chunk, dtype=np.int64))


def sizes_that_fit(n: int, batch_size: int, seq_len: int) -> list[str]:
    """Options under which `n` training characters fill one batch (each needs B x (T+1)); none
    when they already do or cannot."""
    if n >= batch_size * (seq_len + 1):
        return []
    options = []
    if n // (seq_len + 1) >= 1:
        options.append(f"--batch-size {n // (seq_len + 1)}")
    if n // batch_size - 1 >= 1:
        options.append(f"--seq-len {n // batch_size - 1}")
    if not options and n >= 2:
        options.append(f"--batch-size 1 --seq-len {min(n - 1, seq_len)}")
    return options


def _sizes_that_fit(n: int, batch_size: int, seq_len: int) -> str:
    """Suggest options under which `n` training characters fill one batch (each needs B x (T+1))."""
    options = sizes_that_fit(n, batch_size, seq_len)
    if not options:
        return "use a longer text"
    return "try " + " or ".join(options) + ", or a longer text"


@dataclass
class StreamBatcher:
    """(x, y) windows over contiguous streams for stateful truncated BPTT.

    An epoch walks every stream left to right in windows of `seq_len`; window `index` of an epoch
    continues window `index - 1` in every row. Each epoch starts at its own offset (drawn from
    `seed` and the epoch number) so window boundaries move between epochs; the position in the
    data is therefore just `(epoch, index)`, which is all a resume needs.
    """

    streams: np.ndarray | torch.Tensor  # (B, L) ids: a view of the corpus (see stream_rows), not a copy
    seq_len: int
    seed: int = 0

    @classmethod
    def from_ids(cls, ids: np.ndarray, batch_size: int, seq_len: int, seed: int = 0) -> StreamBatcher:
        need = batch_size * (seq_len + 1)
        if len(ids) < need:
            raise CharRNNError(
                f"training text has {len(ids)} characters, too few for one batch of "
                f"{batch_size} x {seq_len + 1}; {_sizes_that_fit(len(ids), batch_size, seq_len)}"
            )
        return cls(stream_rows(ids, batch_size), seq_len, seed)

    @property
    def batch_size(self) -> int:
        return self.streams.shape[0]

    @property
    def windows_per_epoch(self) -> int:
        return (self.streams.shape[1] - 1) // self.seq_len

    def offset(self, epoch: int) -> int:
        """Where epoch `epoch` starts in every row: 0 for the first, then a seeded draw."""
        spare = (self.streams.shape[1] - 1) - self.windows_per_epoch * self.seq_len
        if epoch == 0 or spare <= 0:
            return 0
        gen = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        return int(torch.randint(0, spare + 1, (1,), generator=gen))

    def window(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-character targets, each (B, T)."""
        start = self.offset(epoch) + index * self.seq_len
        chunk = to_long(self.streams[:, start : start + self.seq_len + 1])
        return chunk[:, :-1], chunk[:, 1:]
