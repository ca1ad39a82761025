"""A corpus's files: found (files, directories walked, globs) and read as code points, block by block.

`resolve_inputs` turns what a user names into the ordered list of text files (see corpus_cache's
joining rules); `code_points` streams one file through the one text decoder (text_decoder, which
data.read_text uses too), so a corpus of any size is never held as a str.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CharRNNError
from .text_decoder import SNIFF_BYTES, decoded_blocks, is_utf16_or_32

BLOCK_BYTES = 4 << 20  # read size: bounds the preparation's working memory to a few tens of MB
_GLOB_CHARS = re.compile(r"[*?\[]")


def _looks_binary(path: Path, encoding: str) -> bool:
    if is_utf16_or_32(encoding):
        return False
    try:
        with open(path, "rb") as f:
            return b"\x00" in f.read(SNIFF_BYTES)
    except OSError:
        return False  # the read proper will report it


def _sort_found(paths: list[Path], encoding: str, files: list[Path], skipped: list[Path]) -> None:
    """Files found (not named): hidden and empty ones are passed over, binary-looking ones skipped."""
    for path in paths:
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            if path.stat().st_size == 0:
                continue
        except OSError:
            continue
        (skipped if _looks_binary(path, encoding) else files).append(path)


def _walk(root: Path, encoding: str) -> tuple[list[Path], list[Path]]:
    """Text files below `root` in sorted path order, and the binary-looking ones skipped."""
    files: list[Path] = []
    skipped: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        _sort_found([Path(dirpath) / name for name in sorted(filenames)], encoding, files, skipped)
    return files, skipped


def resolve_inputs(paths: Sequence[str | os.PathLike], encoding: str = "utf-8") -> tuple[list[Path], list[Path]]:
    """Files and directories and globs -> (text files in order, binary files skipped in directories).

    Files named explicitly are kept as given (their problems are reported when read); directories
    are walked and globs (when no file has that literal name) expanded, in sorted order, passing over
    hidden and empty files and skipping binary-looking ones.
    """
    if not paths:
        raise CharRNNError("give at least one text file, directory or glob")
    files: list[Path] = []
    skipped: list[Path] = []
    for raw in paths:
        if not str(raw).strip():  # Path("") is the current folder: never train on that by accident
            raise CharRNNError("an empty path was given as TEXT; name a text file, directory or glob")
        path = Path(raw)
        if path.is_dir():
            found, skip = _walk(path, encoding)
            if not found:
                raise CharRNNError(f"{path} is a directory with no text files in it")
            files += found
            skipped += skip
        elif path.exists():
            if not path.is_file():  # a pipe (<(...)), FIFO or device: no size, and it can be read only once
                raise CharRNNError(f"{path} is not a regular file (a pipe or a device); training reads its corpus "
                                   "more than once, so save the text to a file first")
            files.append(path)
        elif _GLOB_CHARS.search(str(raw)):
            matches = sorted(glob.glob(str(raw), recursive=True))
            if not matches:
                raise CharRNNError(f"{raw}: no files match")
            for match in map(Path, matches):
                if match.is_dir():
                    found, skip = _walk(match, encoding)
                    files += found
                    skipped += skip
                else:
                    _sort_found([match], encoding, files, skipped)
        else:
            from .corpora import hint_for_missing

            raise CharRNNError(f"{path}: no such file{hint_for_missing(path)}")
    seen: set[Path] = set()
    unique = []
    for f in files:  # a file named twice (a directory and a glob over it) is read once
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise CharRNNError(f"no text files in {', '.join(map(str, paths))}")
    return unique, skipped


def run_name(paths: Sequence[str | os.PathLike]) -> str:
    """A name for the run folder: the file's stem, the directory's name, or a glob's folder."""
    first = str(paths[0]).rstrip("/\\")
    if _GLOB_CHARS.search(first) and not Path(first).exists():
        first = str(Path(first).parent)
    return Path(first).stem or Path(first).resolve().name or "run"


def _chunks(path: Path) -> Iterator[bytes]:
    """A file's bytes, BLOCK_BYTES at a time."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise CharRNNError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with f:
        while True:
            try:
                block = f.read(BLOCK_BYTES)
            except OSError as exc:
                raise CharRNNError(f"{path}: cannot read ({exc.strerror or exc})") from None
            if not block:
                return
            yield block


def code_points(path: Path, encoding: str, hasher: Any = None) -> Iterator[np.ndarray]:
    """The code points of one file, block by block (uint8 for ASCII blocks, else uint32).

    Decoded by text_decoder, as data.read_text is: same rules, same messages. `hasher` gets the
    UTF-8 of the decoded text.
    """
    for block in decoded_blocks(_chunks(path), path, encoding):
        if hasher is not None:
            hasher.update(block.utf8())
        if block.text is None:  # ASCII: the bytes are the code points
            cps = np.frombuffer(block.raw, dtype=np.uint8)
        else:
            cps = np.frombuffer(block.text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        if len(cps):
            yield cps


def code_points_of(text: str) -> np.ndarray:
    """The code points of a short text (a separator), as `code_points` gives a file's."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
