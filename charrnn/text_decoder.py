"""Bytes to corpus text: the one set of decoding rules, for whole texts and for streamed files.

`data.read_text` (a whole file, a pipe or standard input) joins the blocks `decoded_blocks`
yields; the corpus cache (`corpus_inputs.code_points`) turns them into code points one block at a
time, so a corpus of any size is never held as a str. Both therefore refuse the same inputs with
the same line:

  * no bytes, or nothing but a BOM: "<name> is empty";
  * a NUL byte in the first SNIFF_BYTES (unless the encoding is UTF-16/32): binary, not text;
  * an unknown encoding, checked after those two (an empty file is empty under any encoding);
  * undecodable bytes: their offset in the input, with the `--encoding` hint under UTF-8;
  * one leading BOM is an encoding artefact, not a character: dropped.
"""

from __future__ import annotations

import codecs
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import CharRNNError

SNIFF_BYTES = 65536  # how much of an input the binary (NUL byte) check looks at
_BYTEWISE = ("utf-8", "ascii", "iso8859-1")  # codecs under which ASCII bytes are their own characters


def is_utf16_or_32(encoding: str) -> bool:
    """Whether NUL bytes are ordinary in `encoding` (so they do not mean binary)."""
    return encoding.lower().replace("-", "").replace("_", "").startswith(("utf16", "utf32"))


def lookup(encoding: str) -> str:
    """The codec's canonical name ("UTF8" -> "utf-8"), or the one-line error for an unknown one."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise CharRNNError(f"unknown encoding {encoding!r}") from None


@dataclass(frozen=True)
class DecodedBlock:
    """One block of decoded input. `text` is None when the block is plain ASCII under a codec that
    maps ASCII bytes to themselves: then `raw` is the text, and decoding it would only cost time.
    `text` may be "" (a block that ends inside a character); its bytes still count for `utf8`."""

    raw: bytes  # this block's input bytes (a leading UTF-8 BOM removed)
    text: str | None
    codec: str

    def as_text(self) -> str:
        return self.raw.decode("ascii") if self.text is None else self.text

    def utf8(self) -> bytes:
        """This block's share of the UTF-8 of the whole text (what the corpus hash covers): under
        UTF-8 the input bytes themselves, which concatenate to it even where a character straddles
        two blocks, so nothing is encoded again."""
        if self.text is None or self.codec == "utf-8":
            return self.raw
        return self.text.encode("utf-8", "surrogatepass")


class _Decoding:
    """The state of one input being decoded: `feed` each chunk in order, then `finish`."""

    def __init__(self, name: str | os.PathLike, encoding: str):
        self.name, self.encoding = name, encoding
        self.codec: str | None = None
        self.decoder: Any = None
        self.received = 0  # input bytes fed so far (for the NUL check)
        self.offset = 0  # input bytes before the chunk being decoded (for the bad byte's offset)
        self.lead = b""  # under UTF-8, the first bytes while they could still be a BOM
        self.bom_pending = True  # the first character is not decided yet
        self.chars = 0

    def feed(self, chunk: bytes) -> DecodedBlock | None:
        if self.received < SNIFF_BYTES and b"\x00" in chunk[: SNIFF_BYTES - self.received] \
                and not is_utf16_or_32(self.encoding):
            raise CharRNNError(f"{self.name} looks like a binary file (it contains NUL bytes), not text; "
                               "if it is UTF-16 text, pass --encoding utf-16")
        self.received += len(chunk)
        if self.codec is None:
            self.codec = lookup(self.encoding)
            self.decoder = codecs.getincrementaldecoder(self.codec)()
        if self.bom_pending and self.codec == "utf-8":  # dropped as bytes, so they are not hashed either
            head = self.lead + chunk if self.lead else chunk
            if len(head) < len(codecs.BOM_UTF8) and codecs.BOM_UTF8.startswith(head):
                self.lead = head
                return None
            self.lead, self.bom_pending = b"", False
            if head.startswith(codecs.BOM_UTF8):
                head = head[len(codecs.BOM_UTF8):]
                self.offset += len(codecs.BOM_UTF8)
            chunk = head
        return self._decode(chunk)

    def _decode(self, chunk: bytes) -> DecodedBlock | None:
        if not chunk:
            return None
        pending = self.decoder.getstate()[0]  # bytes of a character the previous chunk began
        text: str | None
        if self.codec in _BYTEWISE and not pending and chunk.isascii():
            text = None
        else:
            text = self._decode_text(chunk, pending)
        self.offset += len(chunk)
        if self.bom_pending and (text is None or text):
            self.bom_pending = False
            if text and text[0] == "\ufeff":  # (UTF-16/32 decoders drop their own BOM; this is the rest)
                text = text[1:]
        self.chars += len(chunk) if text is None else len(text)
        return DecodedBlock(chunk, text, self.codec)

    def _decode_text(self, chunk: bytes, pending: bytes) -> str:
        try:
            return self.decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise self._bad_byte(self.offset - len(pending) + exc.start) from None
        except UnicodeError:  # "utf-16"/"utf-32" input without a BOM: native byte order, as bytes.decode reads it
            if self.codec not in ("utf-16", "utf-32"):
                raise
        # nothing was decoded yet (a BOM comes first): decode everything held so far again
        self.decoder = codecs.getincrementaldecoder(f"{self.codec}-{'le' if sys.byteorder == 'little' else 'be'}")()
        try:
            return self.decoder.decode(pending + chunk)
        except UnicodeDecodeError as exc:
            raise self._bad_byte(self.offset - len(pending) + exc.start) from None

    def finish(self) -> list[DecodedBlock]:
        """The input's last blocks, if any: a UTF-8 input shorter than a BOM, then what the decoder held."""
        blocks = [self._decode(self.lead)] if self.lead else []
        if self.decoder is not None:
            pending = self.decoder.getstate()[0]
            try:
                text = self.decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:  # the input ends inside a character
                raise self._bad_byte(self.offset - len(pending) + exc.start) from None
            if text:  # (never under UTF-8, whose held bytes are only ever an unfinished character)
                if self.bom_pending and text[0] == "\ufeff":
                    text = text[1:]
                self.chars += len(text)
                blocks.append(DecodedBlock(b"", text, self.codec))
        if self.chars == 0:
            raise CharRNNError(f"{self.name} is empty")
        return [b for b in blocks if b is not None]

    def _bad_byte(self, offset: int) -> CharRNNError:
        hint = " (pass --encoding, e.g. --encoding latin-1)" if self.codec == "utf-8" else ""
        return CharRNNError(f"{self.name} is not valid {self.encoding}: bad byte at offset {offset}{hint}")


def decoded_blocks(chunks: Iterable[bytes], name: str | os.PathLike, encoding: str) -> Iterator[DecodedBlock]:
    """Decode `chunks` (consecutive pieces of one input, of any sizes) under the rules above, one
    block per chunk. `name` is how messages name the input; `encoding` is named in them as given."""
    decoding = _Decoding(name, encoding)
    held: list[bytes] | None = []  # the first SNIFF_BYTES, gathered: the NUL check comes before any decoding
    held_bytes = 0
    for chunk in chunks:
        if not chunk:
            continue
        if held is not None:
            held.append(chunk)
            held_bytes += len(chunk)
            if held_bytes < SNIFF_BYTES:
                continue
            chunk, held = b"".join(held) if len(held) > 1 else held[0], None
        block = decoding.feed(chunk)
        if block is not None:
            yield block
    if held:
        block = decoding.feed(b"".join(held))
        if block is not None:
            yield block
    yield from decoding.finish()


def decode_bytes(raw: bytes, name: str | os.PathLike, encoding: str) -> str:
    """The whole text of `raw` under the rules above (as one block: no copy beyond the decode)."""
    return "".join(block.as_text() for block in decoded_blocks((raw,), name, encoding))
