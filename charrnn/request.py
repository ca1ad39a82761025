"""What a front end asks to generate, checked in one place.

`GenerationRequest.build(...)` takes everything a front end receives -- the prime (or a file
holding it), the length, the number of samples, the seed, stop strings as typed, the decoding
options, beam search, the output choices that affect what is valid -- and returns a checked
request or raises `CharRNNError` with the one-line message the CLI prints. The CLI only parses
options into it; a web server builds the same object from JSON (`build(**data)`: a value of the
wrong type is the same one-line error, never a TypeError). `check_vocab` then checks what needs
the model's vocabulary (the prime's and the stop strings' characters).

The limits on what generation holds in memory, and the checks the generation functions apply to
their own arguments, live here too, so every front end and the library agree on them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .decoding import GREEDY_BELOW, Decoding
from .errors import CharRNNError
from .escapes import unescape
from .vocab import Vocab

MAX_LENGTH = 100_000_000
MAX_SAMPLES = 100_000
MAX_BEAM = 1_000
# Characters held in memory at once over a batch of samples: as much as one sample of the longest
# length (a streamed sample keeps nothing at all).
MAX_KEPT = MAX_LENGTH
# Beam search keeps back-pointers for every step (two small arrays each, whatever the width).
MAX_BEAM_LENGTH = 1_000_000
MAX_SHOW_TOP = 1_000
MAX_CONTEXT_WIDTH = 10_000
MAX_SEED = 2**63 - 1
DEFAULT_TEMPERATURE = 0.8  # a request's temperature when none is given (the CLI's default)
FORMATS = ("text", "jsonl")
UNKNOWN = ("error", "skip")


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ----------------------------------------------------------------------------------------------
# checks shared with the generation functions


def check_length(length: int) -> None:
    if not _integer(length) or length < 0:
        raise CharRNNError(f"length must be a non-negative integer, got {length!r}")
    if length > MAX_LENGTH:
        raise CharRNNError(f"length {length} is absurdly large (limit {MAX_LENGTH:,})")


def check_num_samples(num_samples: int) -> None:
    if not _integer(num_samples) or not 1 <= num_samples <= MAX_SAMPLES:
        raise CharRNNError(f"number of samples must be in 1..{MAX_SAMPLES:,}, got {num_samples!r}")


def check_seed(seed: int) -> None:
    if not _integer(seed):
        raise CharRNNError(f"seed must be an integer, got {seed!r}")


def check_kept(count: int, length: int, what: str) -> None:
    """Refuse `count` texts of `length` kept in memory together when that is absurdly large."""
    if count * length > MAX_KEPT:
        raise CharRNNError(f"{count:,} {what} of {length:,} characters are absurdly many to keep in memory "
                           f"(at most {MAX_KEPT:,} characters in all); ask for fewer or shorter ones")


def check_beam_width(width: int) -> None:
    if not _integer(width) or not 1 <= width <= MAX_BEAM:
        raise CharRNNError(f"beam width must be in 1..{MAX_BEAM}, got {width!r}")


def check_beam(width: int, length: int) -> None:
    if length > MAX_BEAM_LENGTH:
        raise CharRNNError(f"beam search over {length:,} characters is absurdly long (at most {MAX_BEAM_LENGTH:,})")
    check_kept(width, length, "beam hypotheses")


def check_length_penalty(length_penalty: float) -> None:
    # length**penalty must stay finite for any length up to MAX_LENGTH; useful values are 0..2
    if not (isinstance(length_penalty, (int, float)) and not isinstance(length_penalty, bool)
            and math.isfinite(length_penalty) and 0 <= length_penalty <= 10):
        raise CharRNNError(f"length penalty must be in [0, 10], got {length_penalty!r}")


def check_stops(stop: Sequence[str] | str, vocab: Vocab) -> list[str]:
    """The non-empty stop strings (the library drops empty ones; a request refuses them); one with
    a character the model cannot produce could never occur, which is a mistake."""
    stops = [stop] if isinstance(stop, str) else list(stop)
    if not all(isinstance(s, str) for s in stops):
        raise CharRNNError(f"stop strings must be strings, got {stops!r}")
    stops = [s for s in stops if s]
    for s in stops:
        missing = vocab.unknown(s)
        if missing:
            raise CharRNNError(f"stop string {s!r} can never occur: the model has no {', '.join(map(repr, missing))}")
    return stops


# ----------------------------------------------------------------------------------------------
# the request


@dataclass(frozen=True)
class GenerationRequest:
    """A checked generation request: what to generate and how to present it."""

    length: int
    prime: str
    num_samples: int
    seed: int
    seed_chosen: bool  # the request gave no seed and this one was drawn (say which, so it can be repeated)
    stops: tuple[str, ...]  # unescaped
    decoding: Decoding
    unknown: str = "error"
    beam: int | None = None  # beam search of this width instead of sampling
    length_penalty: float = 1.0
    echo_prime: bool = True  # print the prime before the text (text format)
    format: str = "text"
    show_top: int | None = None  # show each step's top candidates instead of the text
    csv: bool = False  # with show_top: CSV instead of a table
    context_width: int = 40  # with show_top: characters of context shown

    @property
    def streams(self) -> bool:
        """One text sample, written as it is made and never kept (constant memory for any length)."""
        return self.beam is None and self.show_top is None and self.num_samples == 1 and self.format == "text"

    @classmethod
    def build(cls, *, length: int = 1000, prime: str | None = None, prime_file: str | Path | None = None,
              encoding: str = "utf-8", num_samples: int = 1, seed: int | None = None,
              stop: Sequence[str] | str = (), unknown: str = "error", beam: int | None = None,
              length_penalty: float | None = None, echo_prime: bool | None = None, format: str = "text",
              show_top: int | None = None, csv: bool = False, context_width: int | None = None,
              **decoding: Any) -> GenerationRequest:
        """Check what a front end received and return the request, or raise the one-line error.

        `decoding` holds `Decoding`'s fields by name (temperature, greedy, top_k, top_p, epsilon,
        repetition_penalty, repetition_window); None, or a field's default, means not given. The
        temperature defaults to 0.8. `stop` strings are as typed: backslash escapes are read here.
        `echo_prime` None means the format's default (echo in text). A `seed` of None is drawn
        at random (`seed_chosen`).
        """
        fields = {f.name: f for f in Decoding.options()}
        unknown_keys = sorted(set(decoding) - set(fields))
        if unknown_keys:
            raise CharRNNError(f"unknown generation option(s): {', '.join(unknown_keys)}")
        temperature = decoding.pop("temperature", None)
        given = {name: value for name, value in decoding.items() if value is not None and value != fields[name].default}

        check_length(length)
        if length < 1:  # the library allows 0 (a warm-up only); asking a front end for no text is a mistake
            raise CharRNNError(f"--length must be at least 1, got {length}")
        check_num_samples(num_samples)
        for name, flag in (("echo_prime", echo_prime), ("csv", csv)):
            if flag is not None and not isinstance(flag, bool):
                raise CharRNNError(f"{name} must be true or false, got {flag!r}")
        if format not in FORMATS:
            raise CharRNNError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if show_top is not None:
            if beam is not None or num_samples != 1 or format != "text":
                raise CharRNNError("--show-top shows one sample; it takes no --beam, --num-samples or --format")
            if not _integer(show_top) or not 1 <= show_top <= MAX_SHOW_TOP:
                raise CharRNNError(f"number of candidates shown must be in 1..{MAX_SHOW_TOP}, got {show_top!r}")
            context_width = 40 if context_width is None else context_width
            if not _integer(context_width) or not 0 <= context_width <= MAX_CONTEXT_WIDTH:
                raise CharRNNError(f"context width must be in 0..{MAX_CONTEXT_WIDTH}, got {context_width!r}")
        elif csv:
            raise CharRNNError("--csv goes with --show-top")
        if beam is None and length_penalty is not None and length_penalty != 1.0:
            raise CharRNNError("--length-penalty ranks beam search results; it goes with --beam")
        if beam is not None:
            check_beam_width(beam)
            check_beam(beam, length)
            if not 1 <= num_samples <= beam:
                raise CharRNNError(f"--num-samples with --beam {beam} must be in 1..{beam} (the best N beams)")
            length_penalty = 1.0 if length_penalty is None else length_penalty
            check_length_penalty(length_penalty)
            changed = ["--temperature"] if temperature is not None else []
            changed += [fields[name].metadata["cli"] for name in fields if name in given]
            if changed:
                raise CharRNNError(f"--beam ranks by the model's own probabilities; drop {', '.join(changed)}")
        elif not (num_samples == 1 and format == "text"):  # only a single text sample streams in constant memory
            check_kept(num_samples, length, "samples")
        if echo_prime and format == "jsonl":
            raise CharRNNError("--echo-prime prints the prime before a text; --format jsonl records hold only the "
                               "generated text, so it would do nothing")
        if prime is not None and prime_file is not None:
            raise CharRNNError("give --prime or --prime-file, not both")
        if prime is not None and not isinstance(prime, str):
            raise CharRNNError(f"prime must be a string, got {prime!r}")
        _refuse_ignored_decoding(temperature, given, fields)
        stops = tuple(unescape(s) for s in _strings(stop, "stop strings"))
        if any(not s for s in stops):
            raise CharRNNError("--stop '' is empty, so it would end nothing; drop it")
        settings = Decoding(**{**{name: value for name, value in decoding.items() if value is not None},
                               "temperature": DEFAULT_TEMPERATURE if temperature is None else temperature})
        if unknown not in UNKNOWN:
            raise CharRNNError(f"unknown must be one of {', '.join(UNKNOWN)}, got {unknown!r}")
        seed_chosen = seed is None
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
        elif not _integer(seed) or not 0 <= seed <= MAX_SEED:
            raise CharRNNError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
        if prime_file is not None:
            from .data import read_text  # reads and checks the file (missing, binary, encoding: one line each)

            prime = read_text(prime_file, encoding=encoding)
        return cls(length=length, prime=prime or "", num_samples=num_samples, seed=seed, seed_chosen=seed_chosen,
                   stops=stops, decoding=settings, unknown=unknown, beam=beam,
                   length_penalty=1.0 if length_penalty is None else length_penalty,
                   echo_prime=format == "text" if echo_prime is None else echo_prime, format=format,
                   show_top=show_top, csv=csv, context_width=40 if context_width is None else context_width)

    def check_vocab(self, vocab: Vocab) -> None:
        """What needs the model: every prime character known (or skipped), every stop string possible."""
        from .generation import prime_ids

        prime_ids(vocab, self.prime, self.unknown)
        check_stops(self.stops, vocab)


def _strings(values: Sequence[str] | str, what: str) -> list[str]:
    if isinstance(values, str):
        return [values]
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise CharRNNError(f"{what} must be a list of strings, got {values!r}")
    return list(values)


def _refuse_ignored_decoding(temperature: Any, given: dict[str, Any], fields: dict[str, Any]) -> None:
    """Greedy decoding takes the most likely character: options that shape a draw would be ignored,
    and an option that needs another does nothing without it."""
    greedy = given.get("greedy") is True
    cold = isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and 0 <= temperature < GREEDY_BELOW
    if greedy or cold:
        ignored = [fields[name].metadata["cli"] for name in fields
                   if fields[name].metadata["draw"] and name != "temperature" and name in given]
        if greedy and temperature:
            ignored.append("--temperature")
        if ignored:
            how = "--greedy" if greedy else f"-t {temperature:g}"
            raise CharRNNError(f"{how} always takes the most likely character, so {', '.join(ignored)} would do "
                               "nothing; drop it, or sample with a temperature > 0")
    for name in given:
        needs = fields[name].metadata["needs"]
        if needs is not None and needs not in given:
            raise CharRNNError(f"{fields[name].metadata['cli']} does nothing without {fields[needs].metadata['cli']}; "
                               f"drop it, or add {fields[needs].metadata['cli']}")
