r"""Backslash escapes typed on a command line or sent by a front end ("\n\n", \t, \xHH, \uHHHH).

The one parser for every option that takes them (`--stop`, `--separator`), so the same text means
the same characters everywhere.
"""

from __future__ import annotations

from .errors import CharRNNError

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v"}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


def unescape(text: str) -> str:
    r"""Interpret backslash escapes as in a Python string ("\n\n" -> two newlines, \t, \xHH, \uHHHH).

    Unlike `codecs.decode(..., "unicode_escape")` it leaves non-ASCII characters alone. An unknown
    escape or a lone trailing backslash is an error rather than a guess.
    """
    if not isinstance(text, str):
        raise CharRNNError(f"expected a string, got {type(text).__name__}")
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(text):
            raise CharRNNError(f"{text!r} ends with a lone backslash (write \\\\ for a backslash)")
        code = text[i + 1]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
            continue
        digits = _HEX_DIGITS.get(code)
        if digits is None:
            raise CharRNNError(f"unknown escape \\{code} in {text!r} (known: \\n \\t \\r \\\\ \\xHH \\uHHHH)")
        hexa = text[i + 2 : i + 2 + digits]
        if len(hexa) != digits or not all(c in "0123456789abcdefABCDEF" for c in hexa):  # int() takes '+', '_'
            raise CharRNNError(f"bad escape \\{code}{hexa} in {text!r}: needs {digits} hex digits")
        value = int(hexa, 16)
        if value > 0x10FFFF:
            raise CharRNNError(f"bad escape \\{code}{hexa} in {text!r}: beyond the last Unicode code point (10FFFF)")
        out.append(chr(value))
        i += 2 + digits
    return "".join(out)
