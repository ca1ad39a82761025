"""Looking after the corpus cache: list its entries, remove those no running run is using.

An entry is one folder of the cache (corpus_cache.CorpusFiles.entry): the record of its files
(`stats.json`), the encoded id files, and two locks. A run holds the entry's in-use lock shared
while it trains, so `clear` takes it exclusively, without waiting, and passes over the entries it
cannot have; it holds the entry lock as well, so no run starts using an entry half removed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache_entry import LAST_USE_FILE, default_cache_dir, entry_lock, in_use_lock
from .errors import CharRNNError


@dataclass(frozen=True)
class CacheEntry:
    """One cached corpus: `files` are the text files it encodes, in order."""

    name: str
    path: Path
    files: tuple[str, ...]
    chars: int | None
    size_bytes: int
    last_use: float | None  # POSIX time of the last run that loaded it

    @property
    def corpus(self) -> str:
        if not self.files:
            return "?"
        more = f" (+{len(self.files) - 1} files)" if len(self.files) > 1 else ""
        return self.files[0] + more

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "corpus": self.corpus, "files": list(self.files),
                "chars": self.chars, "size_bytes": self.size_bytes, "last_use": _iso(self.last_use)}


@dataclass(frozen=True)
class ClearResult:
    removed: list[CacheEntry]
    skipped: list[tuple[CacheEntry, str]]  # the entry, and why it was kept


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return _dt.datetime.fromtimestamp(when, _dt.timezone.utc).isoformat(timespec="seconds")


def _read_entry(folder: Path) -> CacheEntry:
    files: tuple[str, ...] = ()
    chars = None
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        stats = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
        files = tuple(str(f[0]) for f in stats["files"])
        chars = int(stats["chars"])
    size, newest = 0, None
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            st = path.lstat()
            if path.is_file():
                size += st.st_size
                newest = max(newest or 0.0, st.st_mtime)
    try:
        last_use = (folder / LAST_USE_FILE).stat().st_mtime
    except OSError:
        last_use = newest
    return CacheEntry(folder.name, folder, files, chars, size, last_use)


def list_entries(cache_dir: str | os.PathLike | None = None) -> list[CacheEntry]:
    """The entries of the cache, most recently used first (an absent cache folder has none)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not root.exists():
        return []
    if not root.is_dir():
        raise CharRNNError(f"the corpus cache {root} is not a folder")
    entries = [_read_entry(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return sorted(entries, key=lambda e: -(e.last_use or 0.0))


def _matches(entry: CacheEntry, name: str) -> bool:
    """An entry is named by its folder name, or by the corpus part of it (`shakespeare` for
    `shakespeare-<digest>`), or by the path of its first file."""
    return name in (entry.name, entry.name.rsplit("-", 1)[0]) or (
        bool(entry.files) and os.path.abspath(name) == entry.files[0])


def clear(cache_dir: str | os.PathLike | None = None, names: tuple[str, ...] | list[str] = ()) -> ClearResult:
    """Remove the cache's entries (or those `names` match) that no run is using; report the others."""
    from filelock import Timeout

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entries = list_entries(root)
    if names:
        unknown = [n for n in names if not any(_matches(e, n) for e in entries)]
        if unknown:
            have = ", ".join(e.name for e in entries) or "none"
            raise CharRNNError(f"no corpus cache entry named {', '.join(unknown)} in {root} (entries: {have})")
        entries = [e for e in entries if any(_matches(e, n) for n in names)]
    removed, skipped = [], []
    for entry in entries:
        try:
            with entry_lock(entry.path, timeout=0):
                lock = in_use_lock(entry.path)
                try:
                    try:
                        lock.acquire_write()
                    except Timeout:
                        skipped.append((entry, "in use by a running run"))
                        continue
                    shutil.rmtree(entry.path)
                finally:
                    with contextlib.suppress(Exception):
                        lock.close()
        except Timeout:
            skipped.append((entry, "a run is encoding it right now"))
            continue
        except OSError as exc:
            skipped.append((entry, f"could not remove it: {exc.strerror or exc}"))
            continue
        removed.append(entry)
    return ClearResult(removed, skipped)
