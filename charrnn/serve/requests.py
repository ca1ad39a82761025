"""Every check on what a client sends, in one place: JSON bodies in, validated requests out.

The rules are the library's (`sample.Decoding`, `check_length`, `check_num_samples`,
`check_stops`, `unescape`, `prime_ids`) and raise its one-line messages; on top come what JSON
adds (a string where a number is due, NaN, a bool for an integer, unknown fields) and the server's
own caps, which are far below the library's because one request must not hold the server.

This module stands in for the library's generation request (issue 13, item 2: probably
`charrnn/request.py: GenerationRequest`); once that lands, `parse_generate` becomes a thin
mapping of JSON onto it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from ..errors import CharRNNError
from ..vocab import Vocab

# The server's caps: a request beyond one is answered 413 (see LimitError).
MAX_BODY_BYTES = 256 * 1024
MAX_PRIME = 10_000  # characters of prime or context
MAX_LENGTH = 20_000  # characters generated per sample
MAX_SAMPLES = 16  # samples per non-streaming request
MAX_STOPS = 8
MAX_STOP_CHARS = 100
MAX_BEAM = 16
MAX_CANDIDATES = 20  # top candidates reported per generated character
MAX_SCORE_CHARS = 100_000
MAX_NEURON_CHARS = 5_000
MAX_SEED = 2**63 - 1


class LimitError(CharRNNError):
    """A request beyond one of the server's caps (HTTP 413)."""


@dataclass(frozen=True)
class GenerateRequest:
    """A checked request to generate: everything the scheduler needs, nothing left to fail."""

    run: str
    prime: str
    length: int
    num_samples: int
    seed: int
    stops: tuple[str, ...]
    decoding: Any  # sample.Decoding
    beam: int | None
    length_penalty: float
    candidates: int  # top candidates per generated character (0: none)
    stream: bool
    unknown: str

    def settings(self) -> dict[str, Any]:
        """What the client is told was used (the seed above all, when it was chosen here)."""
        strategy = f"beam {self.beam}" if self.beam else self.decoding.strategy
        return {"seed": self.seed, "strategy": strategy, "length": self.length, "num_samples": self.num_samples}


@dataclass(frozen=True)
class NextRequest:
    run: str
    context: str
    decoding: Any
    unknown: str


@dataclass(frozen=True)
class ScoreRequest:
    run: str
    text: str
    context: str
    unknown: str


@dataclass(frozen=True)
class NeuronRequest:
    run: str
    text: str
    layer: int
    cell: int | None
    unknown: str


# ----------------------------------------------------------------------------------------------
# JSON


def _no_constants(name: str) -> Any:
    raise CharRNNError(f"malformed JSON: {name} is not a number JSON allows")


def read_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or the reason it is not one (a single line)."""
    if len(raw) > MAX_BODY_BYTES:
        raise LimitError(f"request body of {len(raw):,} bytes is over the limit of {MAX_BODY_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CharRNNError("malformed JSON: the body is not UTF-8") from None
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise CharRNNError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits, or deep nesting
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CharRNNError(f"malformed JSON: {first[:120]}") from None
    if not isinstance(data, dict):
        raise CharRNNError(f"the body must be a JSON object, got {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class _Fields:
    """Typed reads of a JSON object's fields, refusing the ones nobody reads."""

    def __init__(self, data: dict[str, Any], known: set[str]):
        unknown = sorted(set(data) - known)
        if unknown:
            raise CharRNNError(f"unknown field(s): {', '.join(map(repr, unknown[:5]))} "
                               f"(known: {', '.join(sorted(known))})")
        self.data = data

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def string(self, key: str, default: str, limit: int | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            value = default
        if not isinstance(value, str):
            raise CharRNNError(f"{key} must be a string, got {_kind(value)}")
        if limit is not None and len(value) > limit:
            raise LimitError(f"{key} of {len(value):,} characters is over the server's limit of {limit:,}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise CharRNNError(f"{key} must be true or false, got {_kind(value)}")
        return value

    def integer(self, key: str, default: int | None, low: int | None = None, high: int | None = None) -> int | None:
        value = self.data.get(key, default)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)  # JSON writers may send 5.0 for 5
        if isinstance(value, bool) or not isinstance(value, int):
            raise CharRNNError(f"{key} must be an integer, got {_kind(value)}")
        if high is not None and value > high:
            raise LimitError(f"{key} {value if abs(value) < 10**12 else 'of ' + str(len(str(value))) + ' digits'} "
                             f"is over the server's limit of {high:,}")
        if low is not None and value < low:
            raise CharRNNError(f"{key} must be at least {low}, got {value if abs(value) < 10**12 else 'a huge number'}")
        return value

    def number(self, key: str, default: float | None) -> float | None:
        value = self.data.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CharRNNError(f"{key} must be a number, got {_kind(value)}")
        value = float(value) if abs(value) < 1e308 else math.inf
        if not math.isfinite(value):
            raise CharRNNError(f"{key} must be a finite number")
        return value


# ----------------------------------------------------------------------------------------------
# the shared parts

_DECODING_FIELDS = {"temperature", "greedy", "top_k", "top_p", "epsilon", "repetition_penalty", "repetition_window"}


def _decoding(f: _Fields) -> Any:
    """The decoding settings, with the CLI's rule that greedy decoding takes no sampling options."""
    from ..sample import GREEDY_BELOW, Decoding

    temperature = f.number("temperature", None)
    greedy = f.boolean("greedy", False)
    top_k = f.integer("top_k", None)
    top_p = f.number("top_p", None)
    epsilon = f.number("epsilon", 0.0)
    if greedy or (temperature is not None and temperature < GREEDY_BELOW):
        ignored = [name for name, used in (("top_k", top_k is not None), ("top_p", top_p is not None),
                                           ("epsilon", bool(epsilon)), ("temperature", greedy and bool(temperature)))
                   if used]
        if ignored:
            how = "greedy" if greedy else f"temperature {temperature:g}"
            raise CharRNNError(f"{how} always takes the most likely character, so {', '.join(ignored)} would do "
                               "nothing; drop it, or sample with a temperature > 0")
    return Decoding(temperature=0.8 if temperature is None else temperature, greedy=greedy, top_k=top_k,
                    top_p=top_p, epsilon=epsilon,
                    repetition_penalty=f.number("repetition_penalty", 1.0),
                    repetition_window=f.integer("repetition_window", 20))


def _unknown(f: _Fields) -> str:
    unknown = f.string("unknown", "error")
    if unknown not in ("error", "skip"):
        raise CharRNNError(f"unknown must be 'error' or 'skip', got {unknown[:20]!r}")
    return unknown


def _encoded(vocab: Vocab, text: str, what: str, unknown: str) -> None:
    from ..vocab import UnknownCharactersError

    try:
        vocab.encode(text, unknown=unknown)
    except UnknownCharactersError as exc:
        raise CharRNNError(f"{UnknownCharactersError(exc.chars, context=what)}; send \"unknown\": \"skip\" "
                           "to drop them") from None


def run_id(data: dict[str, Any]) -> str:
    """The run a request names (checked against the listing by `runs.find_run`)."""
    value = data.get("run")
    if not isinstance(value, str) or not value:
        raise CharRNNError("run is missing: give the id of a run from /api/runs")
    return value


# ----------------------------------------------------------------------------------------------
# the requests


def parse_generate(data: dict[str, Any], vocab: Vocab) -> GenerateRequest:
    """A generation request from its JSON object, checked completely against the model's vocabulary."""
    from ..sample import check_beam, check_length, check_num_samples, check_stops, prime_ids, unescape

    f = _Fields(data, {"run", "prime", "length", "num_samples", "seed", "stop", "beam", "length_penalty",
                       "candidates", "stream", "unknown", *_DECODING_FIELDS})
    run = run_id(data)
    prime = f.string("prime", "", MAX_PRIME)
    length = f.integer("length", 200, high=MAX_LENGTH)
    check_length(length)
    if length < 1:
        raise CharRNNError(f"length must be at least 1, got {length}")
    num_samples = f.integer("num_samples", 1, high=MAX_SAMPLES)
    check_num_samples(num_samples)
    seed = f.integer("seed", None, low=0, high=MAX_SEED)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    stop = data.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise CharRNNError("stop must be a string or an array of strings")
    if len(stop) > MAX_STOPS:
        raise LimitError(f"{len(stop)} stop strings are over the server's limit of {MAX_STOPS}")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise LimitError(f"a stop string is over the server's limit of {MAX_STOP_CHARS} characters")
    stops = check_stops([unescape(s) for s in stop], vocab)
    stream = f.boolean("stream", False)
    beam = f.integer("beam", None, low=1, high=MAX_BEAM)
    length_penalty = f.number("length_penalty", 1.0)
    candidates = f.integer("candidates", 0, low=0, high=MAX_CANDIDATES)
    if beam is None:
        decoding = _decoding(f)
        if length_penalty != 1.0:
            raise CharRNNError("length_penalty ranks beam search results; it goes with beam")
    else:
        changed = sorted(k for k in _DECODING_FIELDS if f.has(k) and data[k] not in (False,))
        if changed:
            raise CharRNNError(f"beam ranks by the model's own probabilities; drop {', '.join(changed)}")
        if candidates:
            raise CharRNNError("candidates are shown for sampled text; beam search takes none")
        if not 1 <= num_samples <= beam:
            raise CharRNNError(f"num_samples with beam {beam} must be in 1..{beam} (the best N beams)")
        if not 0 <= length_penalty <= 10:
            raise CharRNNError(f"length penalty must be in [0, 10], got {length_penalty!r}")
        check_beam(beam, length)
        decoding = _decoding(_Fields({}, set()))
    if stream and num_samples != 1:
        raise CharRNNError("a stream carries one sample; ask for num_samples > 1 without stream")
    unknown = _unknown(f)
    try:
        prime_ids(vocab, prime, unknown)
    except CharRNNError as exc:
        raise CharRNNError(str(exc).replace("use --unknown skip", 'send "unknown": "skip"')) from None
    return GenerateRequest(run=run, prime=prime, length=length, num_samples=num_samples, seed=seed,
                           stops=tuple(stops), decoding=decoding, beam=beam, length_penalty=length_penalty,
                           candidates=candidates, stream=stream, unknown=unknown)


def parse_next(data: dict[str, Any], vocab: Vocab) -> NextRequest:
    """The next-character distribution after a context, under decoding settings."""
    f = _Fields(data, {"run", "context", "unknown", *_DECODING_FIELDS})
    run = run_id(data)
    context = f.string("context", "", MAX_PRIME)
    decoding = _decoding(f)
    unknown = _unknown(f)
    _encoded(vocab, context, "context", unknown)
    return NextRequest(run=run, context=context, decoding=decoding, unknown=unknown)


def parse_score(data: dict[str, Any], vocab: Vocab) -> ScoreRequest:
    f = _Fields(data, {"run", "text", "context", "unknown"})
    run = run_id(data)
    text = f.string("text", "", MAX_SCORE_CHARS)
    context = f.string("context", "", MAX_PRIME)
    unknown = _unknown(f)
    _encoded(vocab, context, "context", unknown)
    _encoded(vocab, text, "text", unknown)
    return ScoreRequest(run=run, text=text, context=context, unknown=unknown)


def parse_neurons(data: dict[str, Any], vocab: Vocab, num_layers: int, hidden_size: int) -> NeuronRequest:
    f = _Fields(data, {"run", "text", "layer", "cell", "unknown"})
    run = run_id(data)
    text = f.string("text", "", MAX_NEURON_CHARS)
    if not text:
        raise CharRNNError("text is empty: give the text to colour")
    layer = f.integer("layer", num_layers - 1, low=0)
    if layer >= num_layers:
        raise CharRNNError(f"layer must be in 0..{num_layers - 1} (the model has {num_layers}), got {layer}")
    cell = f.integer("cell", None, low=0)
    if cell is not None and cell >= hidden_size:
        raise CharRNNError(f"cell must be in 0..{hidden_size - 1} (the layer has {hidden_size}), got {cell}")
    unknown = _unknown(f)
    _encoded(vocab, text, "text", unknown)
    return NeuronRequest(run=run, text=text, layer=layer, cell=cell, unknown=unknown)
