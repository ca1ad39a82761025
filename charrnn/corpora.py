"""Named corpora: where each lives publicly, its sha256, and how to get it into `data/`.

`get()` copies from a local mirror folder when one is given (`--mirror` or CHARRNN_DATA_MIRROR),
else downloads. Either way the bytes are hashed and checked before they are renamed into place,
so a wrong or partial download never leaves a file behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import CharRNNError

MIRROR_ENV = "CHARRNN_DATA_MIRROR"


@dataclass(frozen=True)
class Corpus:
    name: str
    filename: str  # name under data/
    mirror_name: str  # name in a mirror folder
    url: str
    sha256: str
    description: str


CORPORA: dict[str, Corpus] = {
    "shakespeare": Corpus(
        "shakespeare", "shakespeare.txt", "tinyshakespeare.txt",
        "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/"
        "data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "tiny Shakespeare (1.1 MB, 65 characters), from karpathy/char-rnn",
    ),
    "paulgraham": Corpus(
        "paulgraham", "paulgraham.txt", "paulgraham.txt",
        # The essays exist publicly only as one file per essay (rafaelmarino/paul_graham_corpus,
        # txt/); the cleaned single file is assembled offline. Set CHARRNN_PAULGRAHAM_URL to a copy.
        os.environ.get("CHARRNN_PAULGRAHAM_URL", ""),
        "0b30f06b669523ba2d57be3b12309d24c64eae6c76d3718eb132840325926899",
        "197 Paul Graham essays (2.6 MB, 98 characters), cleaned",
    ),
}


def hint_for_missing(path: Path) -> str:
    """A hint naming the command that fetches `path`, if it is a well-known corpus."""
    for corpus in CORPORA.values():
        if path.name in (corpus.filename, corpus.mirror_name) or path.stem == corpus.name:
            return f"; get it with `charrnn data get {corpus.name}`"
    return ""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_verified(read_into, dest: Path, sha256: str, source: str) -> None:
    """Stream bytes through `read_into(fileobj)` into a temp file, check the hash, rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            read_into(f)
        got = sha256_file(Path(tmp))
        if got != sha256:
            raise CharRNNError(f"{source}: sha256 mismatch (expected {sha256[:16]}…, got {got[:16]}…); "
                               "nothing was saved")
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def download(url: str, dest: str | os.PathLike, sha256: str, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, verifying `sha256`; no partial file is left on any failure."""
    dest = Path(dest)

    def read_into(f) -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, f, 1 << 20)
        except urllib.error.HTTPError as exc:
            raise CharRNNError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CharRNNError(f"download of {url} failed: {reason}") from None

    _copy_verified(read_into, dest, sha256, url)
    return dest


def copy_from_mirror(mirror: str | os.PathLike, corpus: Corpus, dest: Path) -> Path:
    mirror = Path(mirror)
    for name in (corpus.mirror_name, corpus.filename):
        source = mirror / name
        if source.is_file():
            def read_into(f, source=source) -> None:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)

            _copy_verified(read_into, dest, corpus.sha256, str(source))
            return dest
    raise CharRNNError(f"mirror folder {mirror} has no {corpus.mirror_name}")


def get(name: str, data_dir: str | os.PathLike = "data", mirror: str | os.PathLike | None = None,
        url: str | None = None, force: bool = False) -> Path:
    """Put the named corpus at data_dir/<name>.txt and return its path.

    An existing file with the right hash is kept. `mirror` (default: $CHARRNN_DATA_MIRROR) is a
    folder to copy from instead of downloading; `url` overrides the public location.
    """
    if name not in CORPORA:
        raise CharRNNError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}")
    corpus = CORPORA[name]
    dest = Path(data_dir) / corpus.filename
    if dest.is_file() and not force and sha256_file(dest) == corpus.sha256:
        return dest
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    if mirror:
        return copy_from_mirror(mirror, corpus, dest)
    source = url or corpus.url
    if not source:
        raise CharRNNError(f"{name} has no single public file to download; pass --mirror DIR "
                           f"(a folder holding {corpus.mirror_name}) or set CHARRNN_PAULGRAHAM_URL")
    return download(source, dest, corpus.sha256)
