"""`charrnn sample` and `charrnn inspect`: the decoding options they share, and how their output is printed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .common import _checkpoint_dir, _threads_option, checkpoint_option


def _decoding_options(func: Any) -> Any:
    """The options shared by `sample` and `inspect`. A new decoding option (a field of
    `charrnn.decoding.Decoding`) gets its click option here, under the field's name."""
    options = [
        checkpoint_option,
        click.option("-n", "--length", type=int, default=1000, show_default=True, help="Characters to generate (at most)."),
        click.option("-t", "--temperature", type=float, default=None, help="Softmax temperature; 0 means greedy.  [default: 0.8]"),
        click.option("--greedy", is_flag=True, help="Always take the most likely character (argmax)."),
        click.option("--top-k", type=int, default=None, help="Sample only among the K most likely characters."),
        click.option("--top-p", type=float, default=None, help="Nucleus: sample among the fewest characters holding this much probability (0 < P <= 1)."),
        click.option("--epsilon", type=float, default=0.0, help="With this probability take the most likely character, else sample: 1 is greedy, 0 plain sampling. The course notes' ε (the chance of the argmax), the reverse of reinforcement learning's ε-greedy (the chance to explore)."),
        click.option("--repetition-penalty", type=float, default=1.0, help="Divide the probability of characters generated in the last --repetition-window by this (>= 1; breaks loops)."),
        click.option("--repetition-window", type=int, default=20, show_default=True, help="How many recent characters the penalty looks back."),
        click.option("--stop", multiple=True, help=r"End right after this string (repeatable; escapes like '\n\n' work)."),
        click.option("--prime", default=None, help="Text to warm the hidden state with."),
        click.option("--prime-file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None, help="Read the prime from this file (several lines are fine; '-': standard input)."),
        click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of --prime-file."),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Same seed, same text.  [default: random, printed]"),
        click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True, help="What to do with prime characters the model never saw."),
        click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps."),
    ]
    for option in reversed(options):  # decorators apply bottom-up
        func = option(func)
    return func


def _load_for(request: Any, checkpoint: Path | None, device: str) -> Any:
    """The checkpoint the request runs on, with the request's prime and stop strings checked
    against its vocabulary: the output starts only once nothing in the input can fail any more."""
    from ..checkpoint import load
    from ..runtime import resolve_device

    ckpt = load(_checkpoint_dir(checkpoint), resolve_device(device))
    request.check_vocab(ckpt.vocab)
    return ckpt


@click.command()
@_decoding_options
@click.option("--num-samples", type=int, default=1, show_default=True, help="Independent samples, generated together in one batched pass (seeds SEED, SEED+1, ...).")
@click.option("--beam", type=int, default=None, help="Beam search of this width: the most likely continuation(s) instead of a sample.")
@click.option("--length-penalty", type=float, default=1.0, show_default=True, help="Beam ranking: log-probability / length**this (1 = per-character mean).")
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True, help="jsonl: one JSON object per sample (text, seed, temperature, strategy, logprob, ...).")
@click.option("--echo-prime/--no-echo-prime", default=None, help="Print the prime before the generated text.  [default: echo]")
@click.option("--show-top", type=int, default=None, metavar="K", help="Instead of the text, show each step's top K candidates (as `charrnn inspect`).")
@click.option("--csv", "as_csv", is_flag=True, help="With --show-top: CSV instead of an aligned table.")
@_threads_option
def sample(checkpoint: Path | None, device: str, num_samples: int, beam: int | None, length_penalty: float, fmt: str,
           echo_prime: bool | None, show_top: int | None, as_csv: bool, **options: Any) -> None:
    """Generate text from a trained model, one character at a time, streamed as it is made."""
    from ..request import GenerationRequest
    from ..sample import beam_search, generate_batch

    request = GenerationRequest.build(num_samples=num_samples, beam=beam, length_penalty=length_penalty, format=fmt,
                                      echo_prime=echo_prime, show_top=show_top, csv=as_csv, **options)
    ckpt = _load_for(request, checkpoint, device)
    if request.show_top is not None:
        _print_steps(ckpt, request)
        return
    echo = request.prime if request.echo_prime else ""
    if request.beam is not None:
        click.echo(f"beam search, width {request.beam}", err=True)
        results = beam_search(ckpt.model, ckpt.vocab, request.length, width=request.beam,
                              num_return=request.num_samples, prime=request.prime, stop=request.stops,
                              unknown=request.unknown, length_penalty=request.length_penalty)
        _print_samples(results, echo, request.format)
        return
    click.echo(f"seed {request.seed}, {request.decoding.strategy}", err=True)
    if request.streams:
        _stream_one(ckpt, request, echo)
        return
    results = generate_batch(ckpt.model, ckpt.vocab, request.length, num_samples=request.num_samples,
                             prime=request.prime, decoding=request.decoding, seed=request.seed, stop=request.stops,
                             unknown=request.unknown)
    _print_samples(results, echo, request.format)


def _stream_one(ckpt: Any, request: Any, echo: str) -> None:
    """Write each character as it is made; nothing is kept, so any length runs in constant memory."""
    from ..sample import stream

    out = sys.stdout
    flush_each = out.isatty()
    out.write(echo)
    out.flush()
    for char in stream(ckpt.model, ckpt.vocab, request.length, prime=request.prime, decoding=request.decoding,
                       seed=request.seed, stop=request.stops, unknown=request.unknown):
        out.write(char)
        if flush_each or char == "\n":
            out.flush()
    out.write("\n")
    out.flush()


def _print_samples(results: list[Any], echo: str, fmt: str) -> None:
    import json

    from ..sample import sample_record

    for i, result in enumerate(results):
        if fmt == "jsonl":
            click.echo(json.dumps(sample_record(result), ensure_ascii=False))
            continue
        if len(results) > 1:
            seed = "" if result.seed is None else f" · seed {result.seed}"
            click.echo(f"--- sample {i + 1}/{len(results)}{seed} · {result.strategy} · "
                       f"logprob {result.logprob:.2f} ({result.logprob_per_char:.3f}/char) ---")
        click.echo(echo + result.text)


@click.command()
@_decoding_options
@click.option("-k", "--top", type=int, default=5, show_default=True, help="Candidates shown per position.")
@click.option("--context-width", type=int, default=40, show_default=True, help="Characters of context shown (its end).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV (raw characters, full precision) instead of an aligned table.")
@_threads_option
def inspect(checkpoint: Path | None, device: str, top: int, context_width: int, as_csv: bool, **options: Any) -> None:
    """Generate as `sample` does and show, for each position, the context and the top candidates.

    The probabilities are those of the distribution the character was drawn from (after
    temperature, top-k/top-p and the repetition penalty; with --greedy, the model's own at T=1).
    The same seed gives the same text as `charrnn sample`.
    """
    from ..request import GenerationRequest

    request = GenerationRequest.build(show_top=top, csv=as_csv, context_width=context_width, **options)
    _print_steps(_load_for(request, checkpoint, device), request)


def _print_steps(ckpt: Any, request: Any) -> None:
    import csv

    from ..sample import inspect_steps, step_csv_header, step_csv_row, step_table_header, step_table_row

    click.echo(f"seed {request.seed}, {request.decoding.strategy}", err=True)
    top = min(request.show_top, len(ckpt.vocab))
    steps = inspect_steps(ckpt.model, ckpt.vocab, request.length, top=top, prime=request.prime,
                          decoding=request.decoding, seed=request.seed, stop=request.stops, unknown=request.unknown,
                          context_chars=request.context_width)
    out = sys.stdout
    if request.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(step_csv_header(top))
        for view in steps:
            writer.writerow(step_csv_row(view))
        out.flush()
        return
    click.echo(step_table_header(top, request.context_width))
    for view in steps:
        click.echo(step_table_row(view, request.context_width))
