"""Character vocabulary: Unicode code points (never bytes) in a stable sorted order.

A `Vocab` is an ordered list of single characters; the id of a character is its position.
It is stored in checkpoints as that plain list, so it survives JSON and `weights_only` loading.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import CharRNNError


def _describe(chars: Iterable[str], limit: int = 10) -> str:
    chars = sorted(set(chars))
    shown = ", ".join(repr(c) for c in chars[:limit])
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return shown + more


class UnknownCharactersError(CharRNNError):
    """Text contains characters the vocabulary does not have; `.chars` lists them."""

    def __init__(self, chars: Iterable[str], context: str = "text"):
        self.chars = sorted(set(chars))
        super().__init__(
            f"{context} contains {len(self.chars)} character(s) not in the vocabulary: "
            f"{_describe(self.chars)}"
        )


class Vocab:
    """An ordered set of characters; id = index in `chars`."""

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise CharRNNError(f"vocabulary entries must be single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            raise CharRNNError("vocabulary contains duplicate characters")
        if not chars:
            raise CharRNNError("vocabulary is empty")
        self.chars: list[str] = chars
        self.index: dict[str, int] = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        """Sorted unique code points of `text` (sorted so the same text always gives the same ids)."""
        if not text:
            raise CharRNNError("cannot build a vocabulary from empty text")
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: object) -> bool:
        return char in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def __hash__(self) -> int:
        return hash(tuple(self.chars))

    def __repr__(self) -> str:
        return f"Vocab({len(self)} chars)"

    def unknown(self, text: str) -> list[str]:
        """Characters of `text` that are not in the vocabulary, sorted."""
        return sorted(set(text) - self.index.keys())

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        """Ids of `text`. `unknown="error"` raises naming the unknown characters; "skip" drops them."""
        if unknown not in ("error", "skip"):
            raise CharRNNError(f"unknown= must be 'error' or 'skip', got {unknown!r}")
        index = self.index
        try:
            return [index[c] for c in text]
        except KeyError:
            if unknown == "skip":
                return [index[c] for c in text if c in index]
            raise UnknownCharactersError(self.unknown(text)) from None

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)

    def extend(self, text: str) -> Vocab:
        """A vocabulary with the characters of `text` that are new appended at the end.

        Existing ids keep their meaning, which is what fine-tuning on a new corpus needs.
        """
        new = self.unknown(text)
        return Vocab(self.chars + new)

    def to_list(self) -> list[str]:
        return list(self.chars)

    @classmethod
    def from_list(cls, chars: Sequence[str]) -> Vocab:
        return cls(chars)
