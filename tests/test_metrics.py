"""Text metrics: each one on texts whose answer is known by construction."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn import metrics

STARTUP_LOOP = "is that they were all the same thing that was a startup "
CORPUS = (
    "It is the east, and Juliet is the sun.\n"
    "Arise, fair sun, and kill the envious moon,\n"
    "Who is already sick and pale with grief.\n"
)


def test_words_are_lowercased_letter_runs_with_inner_apostrophes():
    assert metrics.words("O'er the hills, 'tis 3 o'clock—don't_stop!") == ["o'er", "the", "hills", "tis", "o'clock", "don't", "stop"]


def test_complete_words_drop_a_word_cut_off_by_the_end():
    assert metrics.complete_words("the king sa") == ["the", "king"]
    assert metrics.complete_words("the king sat.") == ["the", "king", "sat"]


def test_distinct_and_repeated_ngrams():
    assert metrics.distinct_ngram_ratio("abcdefgh", 2) == 1.0
    assert metrics.repeated_ngram_share("abcdefgh", 2) == 0.0
    # "abab" has 2-grams ab, ba, ab: one of three repeats an earlier one
    assert metrics.repeated_ngram_share("abab", 2) == pytest.approx(1 / 3)
    assert metrics.repeated_ngram_share("aaaaaaaaaaa", 8) == pytest.approx(3 / 4)
    assert metrics.repeated_ngram_share("short", 8) == 0.0  # no 8-grams at all: nothing repeats


def test_compression_ratio_is_higher_for_repetitive_text():
    rng = random.Random(0)
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(2000))
    loop = (STARTUP_LOOP * 40)[:2000]
    assert metrics.compression_ratio(loop) > 10 > 2 > metrics.compression_ratio(noise) > 1
    assert metrics.compression_ratio("") == 0.0


def test_karpathys_startup_loop_is_detected_with_its_period():
    text = "The reason I think startups fail " + STARTUP_LOOP * 5 + "is that they"
    loop = metrics.trailing_loop(text)
    assert loop is not None
    assert loop.period == len(STARTUP_LOOP)
    assert text[loop.start:loop.start + loop.period] in STARTUP_LOOP * 2  # a rotation of the loop
    assert loop.start + loop.span == len(text)
    assert metrics.loop_period(text) == len(STARTUP_LOOP)


def test_the_shortest_period_is_reported():
    assert metrics.loop_period("xyz" + "ab" * 40) == 2
    assert metrics.loop_period("\n" * 50) == 1


def test_text_that_merely_contains_a_loop_does_not_end_in_one():
    text = STARTUP_LOOP * 5 + "but then something new happened and nothing repeated."
    assert metrics.trailing_loop(text) is None


def test_short_repeats_are_not_loops():
    assert metrics.trailing_loop("and the king said: the the ") is None  # "the " twice: 8 chars, under min_span
    assert metrics.loop_period("ab" * 10, min_span=32) == 0
    assert metrics.loop_period("ab" * 10, min_span=16) == 2


def test_natural_text_does_not_end_in_a_loop():
    assert metrics.trailing_loop(CORPUS * 1 + "Be not her maid, since she is envious.") is None


@settings(max_examples=200, deadline=None)
@given(unit=st.text(alphabet="abc \n", min_size=1, max_size=12), reps=st.integers(3, 8),
       head=st.text(alphabet="xyz", max_size=20))
def test_any_repeated_unit_at_the_end_is_found(unit, reps, head):
    text = head + unit * reps
    loop = metrics.trailing_loop(text, min_span=1)
    assert loop is not None
    assert len(unit) % loop.period == 0  # the unit itself, or a shorter period inside it (unit = "abab")
    assert loop.span >= len(unit) * reps


def test_an_accidental_square_at_the_end_does_not_hide_the_loop():
    # The text ends in "bcbc" (period 2), but the loop that reaches furthest back has period 5.
    assert metrics.loop_period("xyz" + "abcbc" * 10, min_span=1) == 5


def test_invented_word_share_counts_words_missing_from_the_corpus():
    known = set(metrics.words(CORPUS))
    assert metrics.invented_word_share("It is the sun.", known) == 0.0
    assert metrics.invented_word_share("It is the blorf moon.", known) == pytest.approx(1 / 5)
    assert metrics.invented_word_share("JULIET IS THE SUN.", known) == 0.0  # case is folded
    assert metrics.invented_word_share("the mo", known) == 0.0  # "mo" is cut off by the end, not invented
    assert metrics.invented_word_share("!!! 42 ...", known) == 0.0


@pytest.fixture(scope="module")
def index():
    return metrics.CorpusIndex(CORPUS)


def test_index_finds_every_substring_and_nothing_else(index):
    rng = random.Random(1)
    for _ in range(300):
        start = rng.randrange(len(CORPUS))
        fragment = CORPUS[start:start + rng.randrange(1, 30)]
        assert index.contains(fragment)
    for fragment in ("sun.\nX", "Juliet is the moon", "zz", "kill the envious sun"):
        assert index.contains(fragment) == (fragment in CORPUS)


def test_suffix_array_orders_suffixes():
    text = "mississippi banana bandana\n" * 3
    order = metrics.suffix_array(text)
    assert sorted(order.tolist()) == list(range(len(text)))
    suffixes = [text[i:] for i in order]
    assert suffixes == sorted(suffixes)


def test_match_lengths_equal_brute_force(index):
    text = "Juliet is the envious moon, arise and kill the sun with grief!"
    expected = []
    for i in range(len(text)):
        length = 0
        while i + length < len(text) and text[i:i + length + 1] in CORPUS:
            length += 1
        expected.append(length)
    assert metrics.match_lengths(text, index) == expected


def test_copying_share_and_longest_copy(index):
    copied = "and kill the envious moon"
    assert metrics.copied_ngram_share(copied, index, n=10) == 1.0
    assert metrics.longest_copy("xx" + copied + "qq", index) == copied
    assert metrics.copied_ngram_share("qwertyuiopasdfgh", index, n=10) == 0.0
    mixed = copied + "#qwertyuiop"  # 16 copied 10-grams out of 27
    assert metrics.copied_ngram_share(mixed, index, n=10) == pytest.approx(16 / 27)
    assert metrics.copied_ngram_share("short", index, n=10) == 0.0


def test_index_knows_the_corpus_words(index):
    assert {"juliet", "envious", "grief"} <= index.words


def test_spearman_matches_known_values():
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert metrics.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # ties share their mean rank: ranks of y are 1.5, 1.5, 3, 4
    assert metrics.spearman([1, 2, 3, 4], [0, 0, 5, 9]) == pytest.approx(0.9486833)
    assert math.isnan(metrics.spearman([1, 2, 3], [7, 7, 7]))
    assert math.isnan(metrics.spearman([1], [1]))
    with pytest.raises(ValueError):
        metrics.spearman([1, 2], [1])
