"""`charrnn explain`: an HTML page of what a model does while reading a text."""

from __future__ import annotations

from pathlib import Path

import click

from .common import _checkpoint_dir, _stdin_note, checkpoint_option


@click.command()
@click.argument("text_file", required=False, type=click.Path(allow_dash=True, path_type=Path))
@checkpoint_option
@click.option("--start", type=int, default=0, show_default=True, help="First character of the text to explain.")
@click.option("--length", type=int, default=None, help="Characters to explain from --start.  [default: to the end]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder for explain.html, the figures and finder.csv.  [default: explain/<run name>]")
@click.option("--cell", "cells", multiple=True, metavar="L:h|c:I", help="Show this cell (layer from 1, h or c, unit from 0), e.g. 2:c:37 (repeatable).")
@click.option("--property", "patterns", multiple=True, metavar="NAME=REGEX", help="Score cells against where this regular expression matches (repeatable).")
@click.option("--after", multiple=True, default=(".",), show_default=True, help=r"Score cells against 'the character just read is X' (repeatable; escapes like '\n' work).")
@click.option("--top-k", type=int, default=5, show_default=True, help="Candidates shown per position.")
@click.option("--top-cells", type=int, default=3, show_default=True, help="Best cells listed (and shown) per property.")
@click.option("--position", "lens_position", type=int, default=None, help="Character whose next-character distribution the temperature lens shows.  [default: where the model was least sure, 40 characters in or later]")
@click.option("--temperatures", default="0.5,1,1.5", show_default=True, help="Temperatures of the lens.")
@click.option("--lens-top-k", type=int, default=5, show_default=True, help="The lens's top-k panel (at T=1).")
@click.option("--lens-top-p", type=float, default=0.9, show_default=True, help="The lens's top-p panel (at T=1).")
@click.option("--ngram", "ngram_order", type=int, default=None, metavar="N", help="Compare with an order-N n-gram model fitted on the run's training text.")
@click.option("--corpus", type=click.Path(path_type=Path), default=None, help="The run's training text, if its recorded path moved (the default text's and the n-gram's source).")
@click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True, help="What to do with characters the model never saw.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of TEXT_FILE.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
def explain(text_file: Path | None, checkpoint: Path | None, start: int, length: int | None, out: Path | None,
            cells: tuple[str, ...], patterns: tuple[str, ...], after: tuple[str, ...], top_k: int, top_cells: int,
            lens_position: int | None, temperatures: str, lens_top_k: int, lens_top_p: float,
            ngram_order: int | None, corpus: Path | None, unknown: str, encoding: str, device: str) -> None:
    """Look inside a model reading a text: an HTML page of its predictions, cells, gates and temperature.

    TEXT_FILE is a text file, or - for stdin; without it, the run's own validation text (the end
    of its recorded training corpus). Writes explain.html (self-contained), gates.png/svg,
    temperature.png/svg, cells.png/svg, finder.csv and timeline.md.
    """
    from ..checkpoint import load
    from ..data import STDIN_NAME, is_stdin, read_text
    from ..explain import explain_run
    from ..properties import compile_patterns
    from ..runtext import recorded_split, text_slice
    from ..runtime import resolve_device
    from ..sample import unescape
    from ..sweep import parse_temperatures

    compile_patterns(patterns)  # a bad regex is refused before the model loads
    after_chars = [unescape(a) for a in after]
    temps = parse_temperatures(temperatures)
    run_dir = _checkpoint_dir(checkpoint)
    ckpt = load(run_dir, resolve_device(device))
    if text_file is None:
        text = recorded_split(ckpt.meta, corpus)[1]
        label = "the run's validation text"
    else:
        if is_stdin(text_file):
            _stdin_note("the text to explain")
        text = read_text(text_file, encoding=encoding)  # '-': standard input, bounded like any pipe
        label = STDIN_NAME if is_stdin(text_file) else str(text_file)
    text = text_slice(text, start, length)
    out = out or Path("explain") / (run_dir.parent.name if run_dir.is_file() else run_dir.name)
    label += f", characters {start:,}..{start + len(text) - 1:,}"
    click.echo(f"explaining {len(text):,} characters of {label} under {ckpt.path}", err=True)
    result, written = explain_run(ckpt, text, out, ngram_order=ngram_order, corpus=corpus, source={"text": label},
                                  cells=cells, patterns=patterns, after=after_chars, top_k=top_k, top_cells=top_cells,
                                  lens_position=lens_position, temperatures=temps, lens_top_k=lens_top_k,
                                  lens_top_p=lens_top_p, unknown=unknown)
    for r in result.finder:
        best = (f"{r.best.cell} {r.statistic} {r.best.score:.3f} (control {r.control:.3f})" if r.best
                else "-" if r.present else "not in this text")
        click.echo(f"  {r.name:<18} {best}")
    click.echo(f"wrote {written['html']} and the figures beside it", err=True)
