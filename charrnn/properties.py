"""Simple, named properties of a text, one value per character, for the cell finder to score cells against.

Convention: the value at position t describes the text *up to and including* character t -- what
the network could know right after reading it (its state at step t). So the opening quote itself is
"inside quotes", the closing one is not; a newline has line position 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .errors import CharRNNError

OPENERS, CLOSERS = "([{", ")]}"


@dataclass
class Property:
    """One value per character: binary (0/1) or numeric."""

    name: str
    kind: str  # "binary" or "numeric"
    values: np.ndarray  # (n,) float64
    description: str


def _inside_quotes(text: str) -> np.ndarray:
    out = np.zeros(len(text))
    inside = False
    for t, ch in enumerate(text):
        if ch == '"':
            inside = not inside
        elif ch == "\u201c":
            inside = True
        elif ch == "\u201d":
            inside = False
        out[t] = inside
    return out


def _bracket_depth(text: str) -> np.ndarray:
    out = np.zeros(len(text))
    depth = 0
    for t, ch in enumerate(text):
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            depth = max(depth - 1, 0)  # an unmatched closer does not go below zero
        out[t] = depth
    return out


def _line_position(text: str) -> np.ndarray:
    out = np.zeros(len(text))
    pos = 0
    for t, ch in enumerate(text):
        pos = 0 if ch == "\n" else pos + 1
        out[t] = pos
    return out


def _capitals_lines(text: str) -> np.ndarray:
    """Every character of a line whose letters are all capitals (at least two of them): speaker names."""
    out = np.zeros(len(text))
    start = 0
    for line in text.split("\n"):
        letters = [c for c in line if c.isalpha()]
        if len(letters) >= 2 and all(c.isupper() for c in letters):
            out[start : start + len(line)] = 1
        start += len(line) + 1
    return out


def compile_patterns(patterns: Mapping[str, str] | Iterable[str]) -> dict[str, re.Pattern[str]]:
    """User properties as regular expressions: {name: pattern} or "NAME=REGEX" strings; a pattern
    that does not compile is one CharRNNError naming it."""
    items = patterns.items() if isinstance(patterns, Mapping) else [_name_and_pattern(p) for p in patterns]
    compiled = {}
    for name, pattern in items:
        try:
            compiled[name] = re.compile(pattern, re.MULTILINE)  # ^ and $ at every line: properties are line-minded
        except re.error as exc:
            raise CharRNNError(f"property {name!r}: the regular expression {pattern!r} does not compile ({exc})") from None
    return compiled


def _name_and_pattern(spec: str) -> tuple[str, str]:
    name, sep, pattern = spec.partition("=")
    if not sep or not name or not pattern or not re.fullmatch(r"[A-Za-z_][\w-]*", name):
        raise CharRNNError(f"a property is NAME=REGEX (e.g. 'url=https?://\\S+'), got {spec!r}")
    return name, pattern


def _matches(text: str, pattern: re.Pattern[str]) -> np.ndarray:
    out = np.zeros(len(text))
    for m in pattern.finditer(text):
        out[m.start() : m.end()] = 1
    return out


def text_properties(text: str, *, after: Iterable[str] = (".",),
                    patterns: Mapping[str, str] | Iterable[str] = ()) -> list[Property]:
    """The named properties of `text`, plus "after X" for each character in `after` and one per user regex."""
    if not text:
        raise CharRNNError("the text is empty")
    chars = np.array(list(text))
    letters = np.fromiter((c.isalpha() for c in text), dtype=bool, count=len(text))
    prev_letter = np.concatenate([[False], letters[:-1]])
    depth = _bracket_depth(text)
    props = [
        Property("inside quotes", "binary", _inside_quotes(text), 'between an opening and a closing double quote'),
        Property("inside brackets", "binary", (depth > 0).astype(float), "inside (), [] or {}"),
        Property("bracket depth", "numeric", depth, "nesting depth of (), [] and {}"),
        Property("line position", "numeric", _line_position(text), "characters since the last newline"),
        Property("word start", "binary", (letters & ~prev_letter).astype(float), "the first letter of a word"),
        Property("inside word", "binary", letters.astype(float), "a letter"),
        Property("capitals line", "binary", _capitals_lines(text), "a line written in capitals (speaker names)"),
    ]
    for char in after:
        if len(char) != 1:
            raise CharRNNError(f"'after' properties take single characters, got {char!r}")
        shown = {"\n": "\\n", "\t": "\\t", " ": "space"}.get(char, char)
        props.append(Property(f"after {shown}", "binary", (chars == char).astype(float),
                              f"the character just read is {shown}"))
    for name, pattern in compile_patterns(patterns).items():
        props.append(Property(name, "binary", _matches(text, pattern), f"inside a match of /{pattern.pattern}/"))
    return props
