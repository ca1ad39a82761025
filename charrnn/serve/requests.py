"""What a client sends, checked: JSON bodies in, validated requests out.

The generation rules are the library's: a generation request is `request.GenerationRequest.build`
over the JSON fields, then `check_vocab` against the model, so the server refuses exactly what
`charrnn sample` refuses, with the same one-line messages (the page shows them beside the control
they name). What is left here is what only a server has: the body's shape (a JSON object, no
NaN/Infinity, no field nobody reads -- which also keeps the library's file-reading options such
as `prime_file` out of reach), integers sent as 5.0, the fields only the playground has
(`candidates`, `stream`, the run) and the server's caps, far below the library's because one
request must not hold the server (LimitError: 413).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..errors import CharRNNError
from ..request import UNKNOWN, GenerationRequest
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


class LimitError(CharRNNError):
    """A request beyond one of the server's caps (HTTP 413)."""


@dataclass(frozen=True)
class GenerateRequest:
    """A checked request to generate: the library's request plus what only the playground has."""

    run: str
    generation: GenerationRequest  # checked by the library, against the model's vocabulary too
    candidates: int  # top candidates per generated character (0: none)
    stream: bool  # answer with server-sent events (one sample)

    # what the scheduler and the handlers read, as the library request holds it
    prime = property(lambda self: self.generation.prime)
    length = property(lambda self: self.generation.length)
    num_samples = property(lambda self: self.generation.num_samples)
    seed = property(lambda self: self.generation.seed)
    stops = property(lambda self: self.generation.stops)
    decoding = property(lambda self: self.generation.decoding)
    beam = property(lambda self: self.generation.beam)
    length_penalty = property(lambda self: self.generation.length_penalty)
    unknown = property(lambda self: self.generation.unknown)

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


NEURON_KINDS = ("hidden", "cell")


@dataclass(frozen=True)
class NeuronRequest:
    run: str
    text: str
    layer: int
    kind: str  # "hidden" (h) or "cell" (the LSTM's c)
    cell: int | None
    unknown: str
    finder: bool  # also rank every layer's units against properties of the text (as long again)


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


# ----------------------------------------------------------------------------------------------
# the shared parts

_DECODING_FIELDS = {"temperature", "greedy", "top_k", "top_p", "epsilon", "repetition_penalty", "repetition_window"}
_INTEGER_FIELDS = {"length", "num_samples", "seed", "beam", "candidates", "top_k", "repetition_window"}


def _json_values(data: dict[str, Any]) -> dict[str, Any]:
    """The fields as the library expects them: integers that JSON writers sent as 5.0 made ints,
    and numbers too large for a float (1e999 parses as infinity) refused. Types are left to the
    library's checks, which name the field."""
    out = {}
    for key, value in data.items():
        if isinstance(value, float):
            if not math.isfinite(value):
                raise CharRNNError(f"{key} must be a finite number")
            if key in _INTEGER_FIELDS and value.is_integer() and abs(value) < 2**53:
                value = int(value)
        out[key] = value
    return out


def _cap(data: dict[str, Any], key: str, high: int) -> None:
    """The server's cap on an integer field (a value of another type is the library's to refuse)."""
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value > high:
        shown = value if abs(value) < 10**12 else f"of {len(str(value))} digits"
        raise LimitError(f"{key} {shown} is over the server's limit of {high:,}")


def _cap_text(data: dict[str, Any], key: str, limit: int) -> None:
    value = data.get(key)
    if isinstance(value, str) and len(value) > limit:
        raise LimitError(f"{key} of {len(value):,} characters is over the server's limit of {limit:,}")


def _decoding(data: dict[str, Any]) -> Any:
    """The decoding settings, checked by the library's request rules (greedy takes no sampling
    options, the temperature defaults to 0.8, ...)."""
    return GenerationRequest.build(length=1, **{k: data[k] for k in _DECODING_FIELDS if k in data}).decoding


def _unknown(f: _Fields) -> str:
    unknown = f.string("unknown", "error")
    if unknown not in UNKNOWN:
        raise CharRNNError(f"unknown must be one of {', '.join(UNKNOWN)}, got {unknown[:20]!r}")
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

_GENERATE_FIELDS = {"run", "prime", "length", "num_samples", "seed", "stop", "beam", "length_penalty", "candidates",
                    "stream", "unknown", *_DECODING_FIELDS}


def parse_generate(data: dict[str, Any], vocab: Vocab) -> GenerateRequest:
    """A generation request from its JSON object, checked completely against the model's vocabulary."""
    f = _Fields(data, _GENERATE_FIELDS)  # only the fields the playground offers reach the library
    run = run_id(data)
    data = _json_values(data)
    _cap_text(data, "prime", MAX_PRIME)
    for key, high in (("length", MAX_LENGTH), ("num_samples", MAX_SAMPLES), ("beam", MAX_BEAM),
                      ("candidates", MAX_CANDIDATES)):
        _cap(data, key, high)
    stop = data.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if isinstance(stops, list):
        if len(stops) > MAX_STOPS:
            raise LimitError(f"{len(stops)} stop strings are over the server's limit of {MAX_STOPS}")
        if any(isinstance(s, str) and len(s) > MAX_STOP_CHARS for s in stops):
            raise LimitError(f"a stop string is over the server's limit of {MAX_STOP_CHARS} characters")
    candidates = f.integer("candidates", 0, low=0)
    stream = f.boolean("stream", False)
    library = {k: v for k, v in data.items() if k not in ("run", "candidates", "stream") and v is not None}
    library.setdefault("length", 200)
    generation = GenerationRequest.build(**library)
    if candidates and generation.beam is not None:
        raise CharRNNError("candidates are shown for sampled text; beam search takes none")
    if stream and generation.num_samples != 1:
        raise CharRNNError("a stream carries one sample; ask for num_samples > 1 without stream")
    _encoded(vocab, generation.prime, "prime", generation.unknown)  # the hint in the API's words, not the CLI's
    generation.check_vocab(vocab)
    return GenerateRequest(run=run, generation=generation, candidates=candidates, stream=stream)


def parse_next(data: dict[str, Any], vocab: Vocab) -> NextRequest:
    """The next-character distribution after a context, under decoding settings."""
    f = _Fields(data, {"run", "context", "unknown", *_DECODING_FIELDS})
    run = run_id(data)
    context = f.string("context", "", MAX_PRIME)
    decoding = _decoding(_json_values(data))
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


def parse_neurons(data: dict[str, Any], vocab: Vocab, num_layers: int, hidden_size: int,
                  kinds: tuple[str, ...] = NEURON_KINDS) -> NeuronRequest:
    """`kinds`: the states the model has ("hidden", and "cell" for an LSTM)."""
    f = _Fields(data, {"run", "text", "layer", "kind", "cell", "unknown", "finder"})
    run = run_id(data)
    text = f.string("text", "", MAX_NEURON_CHARS)
    if not text:
        raise CharRNNError("text is empty: give the text to colour")
    layer = f.integer("layer", num_layers - 1, low=0)
    if layer >= num_layers:
        raise CharRNNError(f"layer must be in 0..{num_layers - 1} (the model has {num_layers}), got {layer}")
    kind = f.string("kind", "hidden")
    if kind not in kinds:
        raise CharRNNError(f"kind must be {' or '.join(kinds)} for this model, got {kind[:20]!r}")
    cell = f.integer("cell", None, low=0)
    if cell is not None and cell >= hidden_size:
        raise CharRNNError(f"cell must be in 0..{hidden_size - 1} (the layer has {hidden_size}), got {cell}")
    unknown = _unknown(f)
    _encoded(vocab, text, "text", unknown)
    return NeuronRequest(run=run, text=text, layer=layer, kind=kind, cell=cell, unknown=unknown,
                         finder=f.boolean("finder", False))
