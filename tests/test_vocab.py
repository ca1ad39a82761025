import pytest

from charrnn.errors import CharRNNError
from charrnn.vocab import UnknownCharactersError, Vocab


def test_round_trip_non_ascii():
    text = "¿Qué pasó, señor? — ¡Ay!\nSo sweet 😀"
    vocab = Vocab.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text
    assert len(vocab) == len(set(text))  # code points, not UTF-8 bytes


def test_sorted_and_stable():
    assert Vocab.from_text("cab\nb").chars == ["\n", "a", "b", "c"]
    assert Vocab.from_text("hello world") == Vocab.from_text("world hello")


def test_unknown_characters_are_named():
    vocab = Vocab.from_text("abc")
    with pytest.raises(UnknownCharactersError) as info:
        vocab.encode("abz—")
    assert info.value.chars == ["z", "—"]
    assert "'z'" in str(info.value) and "'—'" in str(info.value)
    assert vocab.encode("azb", unknown="skip") == [0, 1]


def test_extend_keeps_old_ids():
    vocab = Vocab.from_text("abc")
    grown = vocab.extend("cab é!")
    assert grown.chars[:3] == ["a", "b", "c"]
    assert set(grown.chars[3:]) == {" ", "é", "!"}


def test_list_round_trip_and_validation():
    vocab = Vocab.from_text("xyz")
    assert Vocab.from_list(vocab.to_list()) == vocab
    with pytest.raises(CharRNNError):
        Vocab(["a", "a"])
    with pytest.raises(CharRNNError):
        Vocab(["ab"])
    with pytest.raises(CharRNNError):
        Vocab.from_text("")
