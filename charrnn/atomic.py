"""The one way charrnn replaces a file: a temporary file beside it, fsync, rename.

A crash, a kill or a full disk at any moment leaves either the previous complete file or the new
complete one, never half of one. Every writer of a file a user keeps goes through here: checkpoints,
`meta.json`, plots, sweep outputs, the corpus cache and `data get`.

- The temporary file is `.NAME.<random>.tmp` in the same folder (a rename never crosses a file
  system); `temp_pattern(NAME)` matches it, so a writer can clear what a kill left behind.
- It gets the mode a plain `open(path, "w")` would give: the existing file's mode when replacing
  one, else 0666 less the umask (not `mkstemp`'s 0600).
- Any failure or interrupt (even KeyboardInterrupt) removes it; errors about it name the file the
  caller asked for, never the temporary name.
- A symlink keeps pointing where it did (the file it names is replaced). A FIFO or a device is
  written to as it is: there is no file to replace, and /dev/stdout (a link to the pipe or file the
  shell opened) must stay the stream the shell holds, not a file swapped in under it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"


def temp_pattern(name: str) -> str:
    """The glob matching the temporary files of writes to `name` (in its folder)."""
    return f".{name}.*{TEMP_SUFFIX}"


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through `write(fileobj)` (opened with `mode`, "wb" or "w" as UTF-8) and put it at `path`."""
    text = {} if "b" in mode else {"encoding": "utf-8"}
    with replacing(path) as tmp, open(tmp, mode, **text) as f:  # closing flushes; `replacing` fsyncs
        write(f)


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """The path to write `path`'s new content to, put in place when the block ends without an error.

    For writers that need a name rather than one open file (several handles, a check of the bytes
    before they replace anything): an exception in the block removes what was written and keeps the
    previous file. For a FIFO or a device the path itself is given, to be written as it is.
    """
    path = Path(path)
    try:
        st = os.stat(path)  # through links
    except FileNotFoundError:
        st = None  # a new file (or a link to one not there yet)
    except OSError as exc:  # a link loop, a path through a file...
        raise _about(exc, path, path) from None
    if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        try:
            yield path
        except Exception as exc:
            _reraise_os_error(exc, path, path)
            raise
        return
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    tmp = _create_temp(target, None if st is None else stat.S_IMODE(st.st_mode), path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # what the block wrote reaches the disk before the rename
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, Exception):
            _reraise_os_error(exc, path, tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _create_temp(target: Path, mode: int | None, asked: Path) -> Path:
    """A new empty file beside `target`, exclusively ours, with `mode` (None: 0666 less the umask)."""
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _about(exc, asked, exc.filename) from None
        os.close(fd)
        if mode is not None:
            with contextlib.suppress(OSError):  # a file system without modes keeps its default
                os.chmod(tmp, mode)  # as rewriting the file in place would keep it
        return tmp
    raise FileExistsError(f"no free temporary name beside {asked}")


def _reraise_os_error(exc: Exception, path: Path, tmp: Any) -> None:
    """Raise the file system's error behind `exc`, naming `path`; return if there is none.

    A library writing into our file may hide the OSError behind its own: torch's zip writer, cleaning
    up after the disk refused a write, raises `RuntimeError: [enforce fail at inline_container.cc]
    unexpected pos ...` with the OSError as its context. The user must read "No space left on device".
    """
    from .errors import CharRNNError

    seen: BaseException | None = exc
    for _ in range(8):  # a short chain: the error and what it was handling
        if seen is None or isinstance(seen, CharRNNError):  # our own message says it already
            return
        if isinstance(seen, OSError):
            raise _about(seen, path, tmp) from None
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)


def _about(exc: OSError, path: Path, ours: Any) -> OSError:
    """The same error, naming the file the user asked for where it named our temporary one (`ours`)
    or none; an error about some other file (a font savefig could not find) keeps its own name."""
    if exc.errno is None or exc.filename not in (None, ours, str(ours)):
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))  # OSError picks the subclass from errno
