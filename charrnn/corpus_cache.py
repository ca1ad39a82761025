"""Corpora of any size: text files in, one compact memory-mapped id file out.

`CorpusFiles` names the text of a corpus (one file, several, a directory walked recursively, or a
glob) and how its files are joined. On first use it reads them in one streaming pass (vocabulary,
character counts, content hash) and a second streaming pass writes the ids (uint8/16/32 by
vocabulary size) into a cache folder; training memory-maps that id file, so the corpus never
exists as a Python string and memory stays near the id file's size. The cache entry is keyed by
the files and joining options, checked by size + mtime, re-hashed when those change, and rebuilt
only when the content did. Concurrent builders (several ranks, several runs) take a file lock.

Its parts: `corpus_inputs` finds the files and reads them as code points (through `text_decoder`,
the one decoder, which data.read_text uses too); `cache_entry` locks an entry's folder and keeps
its records. Their public names are importable from here as before.

`EncodedCorpus` is what the trainer consumes: vocabulary + train/val id arrays + a little info for
the run's metadata. Build one from text (`from_text`) or from ids you already have (`from_ids`).

Joining and validation (also in the README):
  * files are joined with `separator` (default a blank line, "\\n\\n") between consecutive files;
    with two or more files its characters are part of the vocabulary;
  * a directory contributes every regular file below it in sorted path order, skipping hidden
    names (starting with ".") and files that look binary (a NUL byte in the first 64 KiB);
  * val_split="per-file" (default): the last `val_frac` of *each* file is validation, so every file
    is represented; val_split="end": the last `val_frac` of the joined text. One file: the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .cache_entry import (
    CACHE_ENV,
    CACHE_FORMAT,
    IN_USE_FILE,
    LAST_USE_FILE,
    LOCK_FILE,
    InUseHold,
    default_cache_dir,
    entry_lock,
    in_use_lock,
    read_record,
    removed_if_refused,
    write_record,
)
from .corpus_inputs import BLOCK_BYTES, code_points, code_points_of, resolve_inputs, run_name  # (set BLOCK_BYTES there)
from .data import encode, id_dtype, split
from .errors import CharRNNError
from .escapes import unescape
from .id_file import ids_in_range, stat_key, write_id_file
from .text_decoder import lookup
from .vocab import Vocab

# Names that lived here before the cache's folders (cache_entry) and the finding and reading of
# files (corpus_inputs) became modules of their own: still importable from here.
__all__ = [
    "BLOCK_BYTES", "CACHE_ENV", "CACHE_FORMAT", "DEFAULT_SEPARATOR", "IN_USE_FILE", "LARGE_VALIDATION",
    "LAST_USE_FILE", "LOCK_FILE", "VAL_SPLITS", "CorpusFiles", "CorpusSource", "EncodedCorpus", "as_source",
    "default_cache_dir", "entry_lock", "in_use_lock", "parse_separator", "resolve_inputs", "run_name",
    "sha256_text",
]

DEFAULT_SEPARATOR = "\n\n"
VAL_SPLITS = ("per-file", "end")
LARGE_VALIDATION = 20_000_000  # characters of validation above which each evaluation takes minutes on a CPU
_CODE_POINTS = 0x110000

Log = Callable[[dict[str, Any]], None]


def parse_separator(text: str) -> str:
    """A separator typed on a command line, read by the one escape parser (as `--stop` is)."""
    return unescape(text)


def sha256_text(text: str) -> str:
    """The content hash recorded for a corpus: sha256 of its UTF-8 (what `CorpusFiles` computes streaming)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------------------
# What the trainer consumes


class CorpusSource(Protocol):
    """Anything the trainer can train on: it lists its characters and encodes itself."""

    def chars(self) -> str:
        """Every distinct character of the corpus (in any order, repeats allowed)."""

    def load(self, vocab: Vocab, val_frac: float) -> EncodedCorpus:
        """Train/validation ids under `vocab`."""


@dataclass
class EncodedCorpus:
    """A corpus as ids: `train_ids` and `val_ids` are 1-D uint8/16/32 arrays (often np.memmap)."""

    vocab: Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)  # chars, sha256, ...: goes into meta.json

    @classmethod
    def from_text(cls, text: str, vocab: Vocab | None = None, val_frac: float = 0.1) -> EncodedCorpus:
        """In memory, as `train(text)` always did: the last `val_frac` of the text is validation."""
        vocab = vocab or Vocab.from_text(text)
        train_ids, val_ids = split(encode(text, vocab), val_frac)
        return cls(vocab, train_ids, val_ids, {"chars": len(text), "sha256": sha256_text(text)})

    @classmethod
    def from_ids(cls, ids: np.ndarray, vocab: Vocab, val_frac: float = 0.1,
                 info: dict[str, Any] | None = None) -> EncodedCorpus:
        """Ids you already have (e.g. an np.memmap of a file you wrote); the last `val_frac` validates.

        The array is used as it is (no copy); ids must be integers in [0, len(vocab)).
        """
        ids = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
        if ids.ndim != 1 or ids.dtype.kind not in "ui":
            raise CharRNNError(f"ids must be a 1-D integer array, got {ids.dtype} with shape {ids.shape}")
        if len(ids) and (int(ids.max()) >= len(vocab) or int(ids.min()) < 0):
            raise CharRNNError(f"ids must lie in [0, {len(vocab)}) for a vocabulary of {len(vocab)} characters")
        train_ids, val_ids = split(ids, val_frac)
        return cls(vocab, train_ids, val_ids, {"chars": len(ids), **(info or {})})

    def chars(self) -> str:
        return "".join(self.vocab.chars)

    def load(self, vocab: Vocab, val_frac: float) -> EncodedCorpus:
        """Itself (its own split is kept); under another vocabulary the ids are remapped in memory."""
        if vocab == self.vocab:
            return self
        lacking = vocab.unknown(self.chars())
        if lacking:
            raise CharRNNError(f"the corpus has characters the vocabulary lacks: {lacking[:10]}")
        lut = np.array([vocab.index[c] for c in self.vocab.chars], dtype=id_dtype(len(vocab)))
        return EncodedCorpus(vocab, lut[self.train_ids], lut[self.val_ids], dict(self.info))


@dataclass
class _TextSource:
    text: str

    def chars(self) -> str:
        return self.text

    def load(self, vocab: Vocab, val_frac: float) -> EncodedCorpus:
        return EncodedCorpus.from_text(self.text, vocab, val_frac)


def as_source(corpus: str | CorpusSource) -> CorpusSource:
    """Text, an EncodedCorpus or CorpusFiles -> something with `chars()` and `load()`."""
    if isinstance(corpus, str):
        return _TextSource(corpus)
    if hasattr(corpus, "chars") and hasattr(corpus, "load"):
        return corpus
    raise CharRNNError(f"cannot train on a {type(corpus).__name__}; give text, an EncodedCorpus or CorpusFiles")


# ------------------------------------------------------------------------------------------------
# The files of a corpus, encoded once into a cached id file


class CorpusFiles:
    """The files of a corpus and how they are joined; encodes them once into a cached id file.

    >>> corpus = CorpusFiles.from_paths(["essays/"])      # doctest: +SKIP
    >>> charrnn.train(corpus, "checkpoints/essays")        # doctest: +SKIP
    """

    def __init__(self, files: Sequence[str | os.PathLike], *, separator: str = DEFAULT_SEPARATOR,
                 encoding: str = "utf-8", val_split: str = "per-file",
                 cache_dir: str | os.PathLike | None = None, skipped: Sequence[Path] = (),
                 log: Log | None = None):
        if not files:
            raise CharRNNError("a corpus needs at least one file")
        if val_split not in VAL_SPLITS:
            raise CharRNNError(f"val_split must be one of {', '.join(VAL_SPLITS)}, got {val_split!r}")
        self.encoding = lookup(encoding)
        self.files = [Path(f) for f in files]
        self.separator = separator
        self.val_split = val_split
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.skipped = list(skipped)
        self.log = log or (lambda event: None)
        self.last_status: str | None = None  # "reused", "rehashed" or "built": what the last load did
        self._stats: dict[str, Any] | None = None
        self._in_use = InUseHold(self.log)  # the entry's in-use lock, held shared from the first load until release()

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike], **options: Any) -> CorpusFiles:
        """Files, directories and globs (see `resolve_inputs`); options as for the constructor."""
        files, skipped = resolve_inputs(paths, options.get("encoding", "utf-8"))
        corpus = cls(files, skipped=skipped, **options)
        if skipped:
            names = ", ".join(str(p) for p in skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
            corpus.log({"event": "warning", "message": f"skipped {len(skipped)} binary-looking file(s): {names}"})
        return corpus

    def __repr__(self) -> str:
        return f"CorpusFiles({len(self.files)} file(s), separator={self.separator!r}, val_split={self.val_split!r})"

    @property
    def entry(self) -> Path:
        """This corpus's folder in the cache: named by its files and joining options."""
        key = json.dumps({"files": [str(f.resolve()) for f in self.files], "separator": self.separator,
                          "encoding": self.encoding}, ensure_ascii=False)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", self.files[0].stem)[:40] or "corpus"
        return self.cache_dir / f"{stem}-{digest}"

    def _fingerprint(self) -> list[list[Any]]:
        out = []
        for f in self.files:
            try:
                st = f.stat()
            except OSError as exc:
                raise CharRNNError(f"{f}: cannot read ({exc.strerror or exc})") from None
            out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
        return out

    # ----- pass 1: vocabulary, counts, hash -----------------------------------------------------
    def _scan(self, fingerprint: list[list[Any]]) -> dict[str, Any]:
        seen = np.zeros(_CODE_POINTS, dtype=bool)
        hasher = hashlib.sha256()
        sep_utf8 = self.separator.encode("utf-8")
        file_chars = []
        for i, path in enumerate(self.files):
            if i and self.separator:
                hasher.update(sep_utf8)
            n = 0
            for cps in code_points(path, self.encoding, hasher):
                seen[cps] = True
                n += len(cps)
            file_chars.append(n)
        if len(self.files) > 1 and self.separator:
            seen[code_points_of(self.separator)] = True
        chars = [chr(c) for c in np.flatnonzero(seen)]  # sorted by code point, as Vocab.from_text
        total = sum(file_chars) + len(self.separator) * (len(self.files) - 1)
        return {"format": CACHE_FORMAT, "files": fingerprint, "file_chars": file_chars, "chars": total,
                "vocab": chars, "sha256": hasher.hexdigest()}

    def _current_stats(self) -> dict[str, Any]:
        """Pass 1, unless the cache's record still matches the files' sizes and mtimes."""
        entry = self.entry
        fingerprint = self._fingerprint()
        old = read_record(entry / "stats.json")
        if old is not None and old.get("files") == fingerprint:
            self.last_status = "reused"
            return old
        t0 = time.perf_counter()
        new = self._scan(fingerprint)
        if old is not None and old.get("sha256") == new["sha256"]:
            self.last_status = "rehashed"  # touched, not changed: the id files stay valid
        else:
            for stale in entry.glob("ids-*"):
                stale.unlink(missing_ok=True)
            self.last_status = "built"
        write_record(entry / "stats.json", new)
        self.log({"event": "corpus", "message": f"read {len(self.files)} file(s): {new['chars']:,} characters, "
                  f"vocabulary {len(new['vocab'])}, in {time.perf_counter() - t0:.1f}s"})
        return new

    def stats(self) -> dict[str, Any]:
        """Characters per file, vocabulary and content hash (from the cache when it is current)."""
        if self._stats is None:
            with removed_if_refused(self.entry), entry_lock(self.entry):
                self._stats = self._current_stats()
        return self._stats

    def chars(self) -> str:
        return "".join(self.stats()["vocab"])

    def release(self) -> None:
        """Let `charrnn cache clear` remove this corpus's entry again (also on garbage collection or exit)."""
        self._in_use.release()

    # ----- pass 2: the id file (id_file.write_id_file) ------------------------------------------
    def _layout(self, stats: dict[str, Any], val_frac: float) -> tuple[list[int], int, int]:
        """Characters of each file that go to training, and the train/val lengths."""
        counts = stats["file_chars"]
        sep = len(self.separator)
        if self.val_split == "end":
            n_train = int(stats["chars"] * (1.0 - val_frac))
            return [], n_train, stats["chars"] - n_train
        heads = [int(n * (1.0 - val_frac)) for n in counts]
        tails = [n - h for n, h in zip(counts, heads, strict=True)]
        n_train = sum(heads) + sep * max(sum(1 for h in heads if h) - 1, 0)
        n_val = sum(tails) + sep * max(sum(1 for t in tails if t) - 1, 0)
        return heads, n_train, n_val

    def split_sizes(self, val_frac: float) -> tuple[int, int]:
        """Training and validation characters under `val_frac` (what a hint needs, without encoding)."""
        _, n_train, n_val = self._layout(self.stats(), val_frac)
        return n_train, n_val

    def load(self, vocab: Vocab | None = None, val_frac: float = 0.1) -> EncodedCorpus:
        """The memory-mapped train/val ids under `vocab` (default: the corpus's own, sorted); val_frac 0
        trains on everything (validation from elsewhere)."""
        if not 0.0 <= val_frac < 1.0:
            raise CharRNNError(f"val_frac must be in (0, 1), got {val_frac}")
        entry = self.entry
        with removed_if_refused(entry), entry_lock(entry):
            self._in_use.hold(entry)
            stats = self._stats = self._current_stats()
            vocab = vocab or Vocab(stats["vocab"])
            lacking = vocab.unknown("".join(stats["vocab"]))
            if lacking:
                raise CharRNNError(f"the corpus has characters the vocabulary lacks: {lacking[:10]}")
            vocab_digest = hashlib.sha256("".join(vocab.chars).encode("utf-8", "surrogatepass")).hexdigest()[:12]
            stem = f"ids-{vocab_digest}-{self.val_split}-{val_frac:.6g}"
            bin_path, meta_path = entry / f"{stem}.bin", entry / f"{stem}.json"
            dtype = id_dtype(len(vocab))
            heads, n_train, n_val = self._layout(stats, val_frac)
            meta = read_record(meta_path)
            fresh = (meta is not None and meta.get("sha256") == stats["sha256"] and bin_path.is_file()
                     and bin_path.stat().st_size == (n_train + n_val) * dtype.itemsize)
            if fresh and meta.get("id_file_stat") != stat_key(bin_path):  # changed since it was written
                if ids_in_range(bin_path, dtype, len(vocab)):
                    write_record(meta_path, {**meta, "id_file_stat": stat_key(bin_path)})
                else:
                    self.log({"event": "warning", "message": f"the cached ids in {bin_path} are damaged; "
                              "encoding the corpus again"})
                    fresh = False
            if not fresh:
                t0 = time.perf_counter()
                write_id_file(bin_path, self.files, self.encoding, self.separator, vocab, heads, n_train, n_val)
                write_record(meta_path, {"format": CACHE_FORMAT, "sha256": stats["sha256"], "dtype": dtype.name,
                                        "n_train": n_train, "n_val": n_val, "val_frac": val_frac,
                                        "val_split": self.val_split, "vocab": vocab.chars,
                                        "id_file_stat": stat_key(bin_path)})
                seconds = time.perf_counter() - t0
                size = (n_train + n_val) * dtype.itemsize
                self.log({"event": "corpus", "message": f"encoded {stats['chars']:,} characters into {bin_path} "
                          f"({size / 1e6:.1f} MB, {dtype.name}) in {seconds:.1f}s"})
                self.last_status = "built"
            ids = np.memmap(bin_path, dtype=dtype, mode="r", shape=(n_train + n_val,))
        if n_val > LARGE_VALIDATION:
            self.log({"event": "warning", "message": f"the validation split holds {n_val:,} characters and every "
                      f"evaluation scores all of them; for a corpus this size --val-frac "
                      f"{max(LARGE_VALIDATION / 10 / (n_train + n_val), 1e-6):.1g} is plenty"})
        info = {"chars": stats["chars"], "sha256": stats["sha256"], "files": len(self.files),
                "separator": self.separator, "val_split": self.val_split, "id_file": str(bin_path)}
        return EncodedCorpus(vocab, ids[:n_train], ids[n_train:], info)
