"""Named corpora: where each lives publicly, its sha256, and how to get it into `data/`.

`get()` copies from a local mirror folder when one is given (`--mirror` or CHARRNN_DATA_MIRROR),
else downloads. Either way the bytes are hashed and checked before they are renamed into place,
so a wrong or partial download never leaves a file behind.

Tiny Shakespeare exists publicly as one file and is downloaded as is. The Paul Graham essays exist
publicly only as one file per essay (the GitHub repository rafaelmarino/paul_graham_corpus), so
`get("paulgraham")` downloads that repository's archive at a pinned commit, cleans and joins the
essays in memory (`paulgraham_from_archive`) and checks the sha256 of the result.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .atomic import atomic_write
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
    # None: `url` is the corpus itself. Otherwise `url` is an archive, and this turns the downloaded
    # archive (a local path) into the corpus bytes.
    build: Callable[[Path], bytes] | None = None


# ----------------------------------------------------------------------------------------------
# Paul Graham essays, built from their public source

PAULGRAHAM_REPO = "rafaelmarino/paul_graham_corpus"
PAULGRAHAM_COMMIT = "6742ddcea3265f5e4eafea1af3beb7ce4a8b87c2"  # 2021-03-28: 197 essays + 2 book chapters
# One request for the whole repository (a few MB) rather than ~200 for the essay files. GitHub does not
# promise byte-identical archives over time, so only the corpus built from it is checked, not the archive.
PAULGRAHAM_ARCHIVE_URL = f"https://codeload.github.com/{PAULGRAHAM_REPO}/tar.gz/{PAULGRAHAM_COMMIT}"

# The site's banners, which the scraper kept at the start of many essays ("Watch how ..." links to an
# Etherpad replay of the writing).
_BANNERS = re.compile(r"Want to start a startup\?\s+Get funded by\s+Y Combinator\."
                      r"|Watch how this essay was written(?:\s+on\s+Etherpad)?\.")
# Page-source comments (drafts, cut text, notes) that a browser never shows; some run to pages.
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# Whole lines (after stripping) that are page furniture, not essay text: the comment link, the heading
# of a list of links whose link texts were lost, and three lines listing translations.
_DROPPED_LINES = frozenset({
    "Comment on this essay.",
    "Related:",
    "Japanese Translation",
    "Japanese Translation, Spanish Translation, Chinese Translation",
    "Some Technical DetailsJapanese TranslationMicrosoft finally agreesGates Email",
})
_INDEX = "csv/full_df.csv"  # one row per essay, newest first, as on paulgraham.com/articles.html
_MAX_MEMBER_BYTES = 16 << 20  # the largest essay is ~75 kB; anything huge is not this repository
_MAX_DOWNLOAD_BYTES = 256 << 20


def clean_essay(raw: str) -> str:
    """One essay file of the source repository as corpus text: paragraphs separated by one blank line.

    Drops HTML comments, the site banners and the page-furniture lines above, turns NBSP into a space,
    strips each line and collapses runs of blank lines.
    """
    text = _BANNERS.sub("", _HTML_COMMENT.sub("", raw))
    lines: list[str] = []
    # splitlines, not split("\n"): think.txt and ace.txt keep the HTML source's hard line breaks, but not
    # as "\n" (apparently "\r"); paulgraham.txt has them as line breaks.
    for line in text.splitlines():
        line = line.replace("\xa0", " ").strip()
        if line in _DROPPED_LINES or (not line and (not lines or not lines[-1])):
            continue
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def essay_index(index_csv: str) -> list[tuple[str, str]]:
    """(title, essay file stem) for each essay row of the repository's csv/full_df.csv, in order.

    The two "Chapter N of Ansi Common Lisp" rows link off-site (and are mostly Lisp code); they are left out.
    """
    reader = csv.DictReader(io.StringIO(index_csv))
    if not reader.fieldnames or not {"title", "partial_link"} <= set(reader.fieldnames):
        raise CharRNNError(f"{_INDEX} has no title and partial_link columns")
    essays = []
    for row in reader:
        link = row["partial_link"] or ""
        if "://" in link:
            continue
        stem = link.removesuffix(".html")
        if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
            raise CharRNNError(f"{_INDEX} links to an unexpected page {link!r}")
        essays.append(((row["title"] or "").strip(), stem))
    return essays


def assemble_essays(index_csv: str, read_essay: Callable[[str], str]) -> str:
    """The corpus text: for each essay of the index, its title, a blank line and its cleaned body;
    essays separated by two blank lines; one final newline. `read_essay(stem)` returns txt/<stem>.txt."""
    essays = [f"{title}\n\n{clean_essay(read_essay(stem))}" for title, stem in essay_index(index_csv)]
    return "\n\n\n".join(essays) + "\n"


def paulgraham_from_archive(archive: Path) -> bytes:
    """Build paulgraham.txt (UTF-8 bytes) from a tar(.gz) of the paul_graham_corpus repository."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            # Read only the csv and txt/*.txt members, by name below the archive's top folder; nothing
            # is extracted to disk.
            for member in tar:
                _, _, inner = member.name.partition("/")
                if not member.isfile() or not (inner == _INDEX or re.fullmatch(r"txt/[^/]+\.txt", inner)):
                    continue
                if member.size > _MAX_MEMBER_BYTES:
                    raise CharRNNError(f"{member.name} is {member.size:,} bytes; not an essay")
                handle = tar.extractfile(member)
                if handle is not None:
                    files[inner] = handle.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # tarfile's messages run to lines
        raise CharRNNError(f"not a readable tar archive ({reason})") from None

    def text_of(inner: str) -> str:
        if inner not in files:
            raise CharRNNError(f"the archive has no {inner}; is it the {PAULGRAHAM_REPO} repository?")
        try:
            return files[inner].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CharRNNError(f"{inner} is not UTF-8 ({exc.reason} at byte {exc.start})") from None

    return assemble_essays(text_of(_INDEX), lambda stem: text_of(f"txt/{stem}.txt")).encode("utf-8")


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
        PAULGRAHAM_ARCHIVE_URL,
        "0b30f06b669523ba2d57be3b12309d24c64eae6c76d3718eb132840325926899",
        f"197 Paul Graham essays (2.6 MB, 98 characters), cleaned, from {PAULGRAHAM_REPO}",
        build=paulgraham_from_archive,
    ),
}


# ----------------------------------------------------------------------------------------------
# fetching


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


class _Sink:
    """The file a download or copy streams into: hashes what passes, and a failed write (a full disk)
    becomes one error naming the file the user asked for, not a failed download."""

    def __init__(self, f: BinaryIO, dest: Path) -> None:
        self.f, self.dest, self.digest = f, dest, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        try:
            return self.f.write(data)
        except OSError as exc:
            raise CharRNNError(f"could not write {self.dest}: {exc.strerror or exc}") from None


def _copy_verified(read_into: Callable[[_Sink], None], dest: Path, sha256: str, source: str) -> None:
    """Stream bytes through `read_into(sink)` into a temp file, check the hash, rename (charrnn.atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(f: BinaryIO) -> None:
        sink = _Sink(f, dest)
        read_into(sink)
        got = sink.digest.hexdigest()
        if got != sha256:
            raise CharRNNError(f"{source}: sha256 mismatch (expected {sha256[:16]}…, got {got[:16]}…); "
                               "nothing was saved")

    try:
        atomic_write(dest, write)
    except OSError as exc:
        raise CharRNNError(f"could not write {dest}: {exc.strerror or exc}") from None


def _fetch_into(url: str, f, timeout: float) -> None:
    """Copy the body at `url` into the open binary file `f`; one-line CharRNNError on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            copied = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                copied += len(block)
                if copied > _MAX_DOWNLOAD_BYTES:
                    raise CharRNNError(f"download of {url} stopped: more than {_MAX_DOWNLOAD_BYTES >> 20} MiB")
                f.write(block)
    except CharRNNError:
        raise
    except urllib.error.HTTPError as exc:
        raise CharRNNError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:  # no connection: name lookup, refused, unreachable
        raise CharRNNError(f"download of {url} failed: {exc.reason} "
                           f"(offline? --mirror DIR or ${MIRROR_ENV} copies from a local folder)") from None
    except (OSError, ValueError) as exc:  # a timeout or reset mid-way, a malformed address, a full disk
        raise CharRNNError(f"download of {url} failed: {exc}") from None


def download(url: str, dest: str | os.PathLike, sha256: str, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, verifying `sha256`; no partial file is left on any failure."""
    dest = Path(dest)
    _copy_verified(lambda f: _fetch_into(url, f, timeout), dest, sha256, url)
    return dest


def download_and_build(url: str, dest: str | os.PathLike, sha256: str, build: Callable[[Path], bytes],
                       timeout: float = 60.0) -> Path:
    """Download the archive at `url`, turn it into corpus bytes with `build`, verify `sha256`, place at `dest`.

    The archive lives in a scratch file beside `dest` (not a replacement of anything) and is removed whatever happens; a corpus that does
    not match the hash is never saved.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, archive = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".download", dir=dest.parent)  # scratch
    try:
        with os.fdopen(fd, "wb") as f:
            _fetch_into(url, _Sink(f, dest), timeout)
        try:
            corpus = build(Path(archive))
        except CharRNNError as exc:
            raise CharRNNError(f"{url}: {exc}") from None
        _copy_verified(lambda f: f.write(corpus), dest, sha256, f"corpus built from {url}")
    finally:
        try:
            os.unlink(archive)
        except OSError:
            pass
    return dest


def copy_from_mirror(mirror: str | os.PathLike, corpus: Corpus, dest: Path, origin: str = "") -> Path:
    mirror = Path(mirror)
    if not mirror.is_dir():
        raise CharRNNError(f"mirror folder {mirror}{origin} {'is not a folder' if mirror.exists() else 'does not exist'}")
    for name in (corpus.mirror_name, corpus.filename):
        source = mirror / name
        if source.is_file():
            def read_into(f, source=source) -> None:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)

            _copy_verified(read_into, dest, corpus.sha256, str(source))
            return dest
    raise CharRNNError(f"mirror folder {mirror}{origin} has no {corpus.mirror_name}")


def get(name: str, data_dir: str | os.PathLike = "data", mirror: str | os.PathLike | None = None,
        url: str | None = None, force: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Put the named corpus at data_dir/<name>.txt and return its path.

    An existing file with the right hash is kept. One with another hash (edited, damaged, another
    version) is someone's text: it is refused unless `force`, and then replaced, which `log` is told.
    `mirror` (default: $CHARRNN_DATA_MIRROR) is a folder to copy from instead of downloading; `url`
    overrides the public location (for a corpus that is built, the location of the source archive).
    """
    if name not in CORPORA:
        raise CharRNNError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}")
    corpus = CORPORA[name]
    dest = Path(data_dir) / corpus.filename
    mismatch = dest.is_file() and sha256_file(dest) != corpus.sha256
    if dest.is_file() and not force and not mismatch:
        return dest
    if mismatch and not force:
        raise CharRNNError(f"{dest} does not match the sha256 of {name} (edited, damaged or another version?); "
                           "pass --force to replace it")
    if mirror is not None and url is not None:
        raise CharRNNError("give --mirror or --url, not both")
    path = _fetch(corpus, dest, mirror, url)
    if mismatch and log is not None:
        log(f"{dest} did not match its sha256; replaced with a verified copy")
    return path


def _fetch(corpus: Corpus, dest: Path, mirror: str | os.PathLike | None, url: str | None) -> Path:
    origin = ""
    if mirror is None and url is None and os.environ.get(MIRROR_ENV):  # an explicit --url beats the environment
        mirror, origin = os.environ[MIRROR_ENV], f" (from ${MIRROR_ENV})"
    if mirror:
        return copy_from_mirror(mirror, corpus, dest, origin)
    source = url or corpus.url
    if corpus.build is None:
        return download(source, dest, corpus.sha256)
    return download_and_build(source, dest, corpus.sha256, corpus.build)
