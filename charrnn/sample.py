"""Sampling from a trained model: the public entry points, gathered from the modules that do the work.

  generate(...)        -> str                one sample
  generate_batch(...)  -> list[Sample]       N samples in one batched pass, with their statistics
  stream(...)          -> Iterator[str]      one sample, character by character, in constant memory
  Generation(...)                            the iterator underneath all three (per-step access)
  beam_search(...)     -> list[Sample]       the most likely continuations, length-normalised
  inspect_steps(...)   -> Iterator[StepView] the top candidates at each generated position

Where the work is done:
  decoding    the decoding chain (`Decoding`, `Chooser.choose`: the one function that picks every
              character), Philox draws keyed by seed, the samples' statistics
  generation  warming on the prime and the step loop (`Generation`, `generate*`, `stream`)
  beam        beam search
  steps       per-step views and the table/CSV/JSON presentation
  request     `GenerationRequest`: everything a front end asks for, checked; the limits
  escapes     backslash escapes in stop strings (and corpus separators)

Sample i of a batch uses seed `seed + i` and is exactly the text that `seed + i` gives alone.
"""

from __future__ import annotations

from .beam import beam_search
from .decoding import GREEDY_BELOW, Chooser, Decoding, log_softmax, sampling_distribution
from .escapes import unescape
from .generation import PRIME_CHUNK, Generation, Sample, generate, generate_batch, prime_ids, stream, warm
from .request import (
    MAX_BEAM,
    MAX_BEAM_LENGTH,
    MAX_KEPT,
    MAX_LENGTH,
    MAX_SAMPLES,
    GenerationRequest,
    check_beam,
    check_kept,
    check_length,
    check_num_samples,
    check_stops,
)
from .steps import (
    StepView,
    inspect_steps,
    sample_record,
    step_csv_header,
    step_csv_row,
    step_table_header,
    step_table_row,
    visible,
)

__all__ = [
    "GREEDY_BELOW", "MAX_BEAM", "MAX_BEAM_LENGTH", "MAX_KEPT", "MAX_LENGTH", "MAX_SAMPLES", "PRIME_CHUNK",
    "Chooser", "Decoding", "Generation", "GenerationRequest", "Sample", "StepView", "beam_search", "check_beam",
    "check_kept", "check_length", "check_num_samples", "check_stops", "generate", "generate_batch",
    "inspect_steps", "log_softmax", "prime_ids", "sample_record", "sampling_distribution", "step_csv_header",
    "step_csv_row", "step_table_header", "step_table_row", "stream", "unescape", "visible", "warm",
]
