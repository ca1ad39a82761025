"""`charrnn score`: how well a model predicts a text."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import click

from ..errors import CharRNNError
from .common import _checkpoint_dir, _stdin_note, _threads_option, checkpoint_option


@click.command()
@click.argument("text_file", type=click.Path(allow_dash=True, path_type=Path))
@checkpoint_option
@click.option("--context", default="", help="Text the model reads first (not scored); without it the file's first character is only context.")
@click.option("--per-char", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None, help="Write each character's surprisal (TSV: position, char, nats, bits) to this file ('-': stdout).")
@click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True, help="What to do with characters the model never saw.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of TEXT_FILE.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--ngram", "ngram_order", type=int, default=None, metavar="N", help="Also report an order-N character n-gram model (interpolated Kneser-Ney) fitted on the run's training text.")
@click.option("--corpus", type=click.Path(path_type=Path), default=None, help="With --ngram: the training text to fit it on (all of it).  [default: the run's recorded corpus minus its validation split]")
@_threads_option
def score(text_file: Path, checkpoint: Path | None, context: str, per_char: Path | None, unknown: str, encoding: str,
          device: str, ngram_order: int | None, corpus: Path | None) -> None:
    """How well a model predicts TEXT_FILE: mean loss in nats/char, bits/char and perplexity.

    TEXT_FILE '-' reads standard input.
    """
    from ..atomic import atomic_write
    from ..checkpoint import load
    from ..data import STDIN_NAME, is_stdin, read_text
    from ..runtime import resolve_device
    from ..scoring import score_text, surprisal_lines

    if per_char is not None and str(per_char) != "-" and not per_char.parent.is_dir():  # say so before scoring
        raise CharRNNError(f"--per-char {per_char}: folder {per_char.parent} does not exist")
    if corpus is not None and ngram_order is None:
        raise CharRNNError("--corpus names the n-gram's training text; it goes with --ngram N")
    if is_stdin(text_file):
        _stdin_note("the text to score")
    text = read_text(text_file, encoding=encoding)
    ckpt = load(_checkpoint_dir(checkpoint), resolve_device(device))
    result = score_text(ckpt.model, ckpt.vocab, text, context=context, unknown=unknown, per_char=per_char is not None)
    ngram_line = ""
    if ngram_order is not None:
        from ..runtext import recorded_split
        from ..scoring import ngram_score

        train_text = read_text(corpus, encoding=encoding) if corpus is not None else recorded_split(ckpt.meta)[0]
        base = ngram_score(ckpt.vocab, train_text, text, ngram_order, context=context, unknown=unknown)
        ngram_line = (f"\n  {base.nats_per_char:.4f} nats/char   {base.bits_per_char:.4f} bits/char   perplexity "
                      f"{base.perplexity:.3f}   order-{ngram_order} n-gram (interpolated Kneser-Ney, fitted on "
                      f"{len(train_text):,} training characters); the model is "
                      f"{base.nats_per_char - result.nats_per_char:+.4f} nats/char better")
    to_stdout = per_char is not None and (str(per_char) == "-" or _is_stdout(per_char))
    if per_char is not None:
        if to_stdout:
            for line in surprisal_lines(result):
                sys.stdout.write(line)
            sys.stdout.flush()
        else:
            atomic_write(per_char, lambda f: f.writelines(surprisal_lines(result)), mode="w")
    click.echo(f"{STDIN_NAME if is_stdin(text_file) else text_file}: {result.num_chars:,} characters scored under {ckpt.path}\n"
               f"  {result.nats_per_char:.4f} nats/char   {result.bits_per_char:.4f} bits/char   "
               f"perplexity {result.perplexity:.3f}{ngram_line}", err=to_stdout)


def _is_stdout(path: Path) -> bool:
    """Whether `path` is where stdout already goes (/dev/stdout, or the file it is redirected to):
    then the report is written through stdout, in order, and the summary goes to stderr."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
