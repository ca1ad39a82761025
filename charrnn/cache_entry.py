"""The corpus cache's folders: where the cache lives, its entries' locks and their JSON records.

An entry is one folder per corpus (corpus_cache.CorpusFiles.entry). Builders and `charrnn cache
clear` take its file lock one at a time; runs training on it hold its in-use lock shared, so clear
leaves it alone; its records (stats.json, ids-*.json) are written atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import atomic
from .errors import CharRNNError

CACHE_ENV = "CHARRNN_CACHE_DIR"
CACHE_FORMAT = 1
LOCK_FILE = ".lock"  # held (exclusively) while an entry is checked, built or removed
IN_USE_FILE = ".in-use.db"  # held shared by every run training on the entry; `cache clear` needs it alone
LAST_USE_FILE = "last-use"  # touched at every load: `charrnn cache list` shows when


def default_cache_dir() -> Path:
    """$CHARRNN_CACHE_DIR, else $XDG_CACHE_HOME/charrnn, else ~/.cache/charrnn."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "charrnn"


def _cache_folder_error(folder: Path, exc: OSError) -> CharRNNError:
    return CharRNNError(f"cannot use the corpus cache folder {folder}: {exc.strerror or exc}; "
                        f"choose another with --cache-dir or ${CACHE_ENV}")


@contextlib.contextmanager
def entry_lock(folder: Path, timeout: float = -1) -> Iterator[None]:
    """One builder (or remover) per cache entry at a time: ranks of one run, several runs, `cache clear`.

    filelock's lock: flock on POSIX, msvcrt on Windows (the hand-written one was a no-op there).
    `timeout` < 0 waits as long as it takes; a lock not had in time raises filelock.Timeout.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(folder / LOCK_FILE, timeout=timeout, is_singleton=False, thread_local=False)
    for attempt in range(3):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            break
        except Timeout:  # (a TimeoutError, so an OSError: let it through as itself)
            raise
        except FileNotFoundError as exc:  # `cache clear` removed the folder under us: make it again
            if attempt == 2:
                raise _cache_folder_error(folder, exc) from None
        except OSError as exc:
            raise _cache_folder_error(folder, exc) from None
    try:
        yield
    finally:
        lock.release()


def in_use_lock(folder: Path) -> Any:
    """The entry's reader/writer lock: runs hold it shared for as long as they train on the entry's
    id file; `cache clear` takes it exclusively (without waiting) before removing anything."""
    from filelock import ReadWriteLock

    return ReadWriteLock(folder / IN_USE_FILE, is_singleton=False, blocking=False)


class InUseHold:
    """This process's shared hold on an entry's in-use lock, from its first load until `release()`
    (or garbage collection, or exit), so that `charrnn cache clear` leaves the entry alone."""

    def __init__(self, log: Callable[[dict[str, Any]], None]):
        self.log = log
        self._lock: Any = None
        self._finalizer: weakref.finalize | None = None

    def hold(self, entry: Path) -> None:
        """Mark `entry` used now (taken under the entry lock, as clear's check is)."""
        with contextlib.suppress(OSError):
            (entry / LAST_USE_FILE).touch()
        if self._lock is not None:
            return
        try:
            lock = in_use_lock(entry)
            lock.acquire_read(timeout=10, blocking=True)
        except Exception as exc:  # a file system SQLite cannot lock on: train anyway, say what is lost
            self.log({"event": "warning", "message": f"cannot mark the corpus cache entry {entry} as in use "
                      f"({exc}); `charrnn cache clear` could remove it while this run trains"})
            return
        self._lock = lock
        self._finalizer = weakref.finalize(self, close_quietly, lock)

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            if self._finalizer is not None:
                self._finalizer.detach()
            close_quietly(lock)


def close_quietly(lock: Any) -> None:
    """Release and close a lock; one already gone (its folder removed, the process ending) is fine."""
    with contextlib.suppress(Exception):
        lock.close()


@contextlib.contextmanager
def removed_if_refused(folder: Path) -> Iterator[None]:
    """A cache entry made for files that are then refused (binary, empty, not UTF-8, ...) holds
    nothing but its lock: remove it, so rejected inputs leave no orphan folders in the cache."""
    new = not folder.exists()
    try:
        yield
    except BaseException:
        if new:
            with contextlib.suppress(OSError):
                if all(p.name in (LOCK_FILE, LAST_USE_FILE) or p.name.startswith(IN_USE_FILE) or p.name.endswith(".lock")
                       for p in folder.iterdir()):
                    for p in folder.iterdir():
                        p.unlink()
                    folder.rmdir()
        raise


def write_record(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, ensure_ascii=False)
    try:
        atomic.atomic_write(path, lambda f: f.write(text), mode="w")
    except OSError as exc:
        raise CharRNNError(f"could not write {path}: {exc.strerror or exc}; choose a cache folder with room "
                           f"with --cache-dir or ${CACHE_ENV}") from None


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else None
