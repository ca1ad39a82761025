"""One text decoder (charrnn.text_decoder): `read_text` (a whole file at once) and the corpus cache
(block by block, with its ASCII fast path and hash) refuse the same bad input with the same line and
read good input to the same text."""

import hashlib

import numpy as np
import pytest

from charrnn import corpus_inputs
from charrnn.corpus_cache import CorpusFiles, sha256_text
from charrnn.data import read_text
from charrnn.errors import CharRNNError

BLOCK = 4099  # odd, so multi-byte characters straddle block edges
_TEXT = ("abc é中 😀\n" * 30_000).encode("utf-8")  # ~450 KB: many blocks, past the binary check's window
_BAD_AT = 150_001


def _streamed(path, cache_dir, encoding="utf-8"):
    """The corpus cache's reading of `path`: its text (rebuilt from the ids) and content hash."""
    data = CorpusFiles([path], encoding=encoding, cache_dir=cache_dir).load(val_frac=0.0)
    return data.vocab.decode(np.asarray(data.train_ids)), data.info["sha256"]


@pytest.mark.parametrize("raw, encoding, expected", [
    (b"ab\x00cd" * 10, "utf-8", "looks like a binary file (it contains NUL bytes), not text; "
                                "if it is UTF-16 text, pass --encoding utf-16"),
    (_TEXT[:_BAD_AT] + b"\xff" + _TEXT[_BAD_AT:], "utf-8",
     f"is not valid utf-8: bad byte at offset {_BAD_AT} (pass --encoding, e.g. --encoding latin-1)"),
    (b"se\xf1or, \xe0 bient\xf4t", "utf-8", "is not valid utf-8: bad byte at offset 2 "
                                              "(pass --encoding, e.g. --encoding latin-1)"),
    (_TEXT + "中".encode()[:2], "utf-8", f"is not valid utf-8: bad byte at offset {len(_TEXT)} "
                                         "(pass --encoding, e.g. --encoding latin-1)"),  # ends inside a character
    (b"\xef\xbb\xbf", "utf-8", "is empty"),  # nothing but a BOM
    (b"", "utf-8", "is empty"),
    (b"caf\xe9 \x81", "ascii", "is not valid ascii: bad byte at offset 3"),  # the hint is for UTF-8 only
])
def test_both_readers_refuse_bad_input_with_the_same_line(tmp_path, monkeypatch, raw, encoding, expected):
    monkeypatch.setattr(corpus_inputs, "BLOCK_BYTES", BLOCK)
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    with pytest.raises(CharRNNError) as whole:
        read_text(path, encoding=encoding)
    with pytest.raises(CharRNNError) as streamed:
        _streamed(path, tmp_path / "cache", encoding)
    assert str(streamed.value) == str(whole.value)
    if expected is not None:
        assert str(whole.value) == f"{path} {expected}"


@pytest.mark.parametrize("raw, encoding", [
    (b"\xef\xbb\xbf" + _TEXT, "utf-8"),  # the BOM is dropped, not a character
    (b"\xef\xbb\xbf\xef\xbb\xbfdouble", "utf-8"),  # only the first one is an encoding artefact
    (_TEXT, "utf-8"),
    ("señor, à bientôt\n".encode("latin-1") * 1000, "latin-1"),
    ("wide 中文 text\n".encode("utf-16") * 1000, "utf-16"),
    ("no BOM, native order\n".encode("utf-16-le") * 1000, "utf-16"),  # as bytes.decode reads it
])
def test_both_readers_read_good_input_to_the_same_text_and_hash(tmp_path, monkeypatch, raw, encoding):
    monkeypatch.setattr(corpus_inputs, "BLOCK_BYTES", BLOCK)
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    text = read_text(path, encoding=encoding)
    assert not text.startswith("\ufeff") or text.startswith("\ufeffdouble")
    streamed, digest = _streamed(path, tmp_path / "cache", encoding)
    assert streamed == text
    assert digest == sha256_text(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
