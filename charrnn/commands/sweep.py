"""`charrnn sweep`: sample a model across temperatures and measure the spectrum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import CharRNNError
from ..sweep import SweepConfig
from .common import _checkpoint_dir, _stdin_note, _threads_option, checkpoint_option

_SWEEP_DEFAULTS = SweepConfig()  # the dataclass is the single source of the sweep's defaults


@click.command()
@checkpoint_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder for samples, metrics, plots and report.  [default: sweeps/<run name>]")
@click.option("--temperatures", default=",".join(f"{t:g}" for t in _SWEEP_DEFAULTS.temperatures), show_default=True, help="Comma-separated softmax temperatures.")
@click.option("--greedy/--no-greedy", default=True, show_default=True, help="Also decode greedily (argmax; one sample).")
@click.option("--num-samples", type=click.IntRange(1, 10_000), default=_SWEEP_DEFAULTS.num_samples, show_default=True, help="Samples per temperature (sample i uses seed + i).")
@click.option("--length", type=click.IntRange(1, 1_000_000), default=_SWEEP_DEFAULTS.length, show_default=True, help="Characters per sample.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=_SWEEP_DEFAULTS.seed, show_default=True, help="First seed; the same at every temperature.")
@click.option("--prime", default=_SWEEP_DEFAULTS.prime, help="Text to warm the hidden state with, the same at every temperature.  [default: none]")
@click.option("--corpus", type=click.Path(allow_dash=True, path_type=Path), default=None, help="Training text to compare samples with ('-': standard input).  [default: the path in the checkpoint]")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the training text.")
@click.option("--check", is_flag=True, help="Exit with status 1 unless the spectrum holds (repetition falls, invention rises, greedy loops, T=2 invents a third of its words); needs greedy, T=2 and at least 3 temperatures.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
@_threads_option
def sweep(checkpoint: Path | None, out: Path | None, temperatures: str, greedy: bool, num_samples: int, length: int,
          seed: int, prime: str, corpus: Path | None, encoding: str, check: bool, device: str) -> None:
    """Sample a model across temperatures and measure the repetitive-to-chaotic spectrum."""
    from .. import sweep as sweeping

    run_dir = _checkpoint_dir(checkpoint)
    out = out or Path("sweeps") / (run_dir.stem if run_dir.is_file() else run_dir.name)
    config = sweeping.SweepConfig(temperatures=sweeping.parse_temperatures(temperatures), greedy=greedy,
                                  num_samples=num_samples, length=length, seed=seed, prime=prime)
    if check and sweeping.unmet_check_needs(config):  # said now, not as FAILs after the sampling
        raise CharRNNError("--check needs " + "; ".join(sweeping.unmet_check_needs(config)))
    if corpus is not None and str(corpus) == "-":
        _stdin_note("the training text")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made fails now, not after the sampling

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "index":
            click.echo(f"indexing the training text ({event['chars']:,} chars)", err=True)
        elif event["event"] == "setting":
            click.echo(f"[{event['number']}/{event['total']}] {event['setting']}: {event['seconds']:.1f}s", err=True)
        elif event["event"] == "warning":
            click.echo(f"warning: {event['message']}", err=True)

    try:
        result = sweeping.sweep(run_dir, out, config, corpus=corpus, encoding=encoding, device=device,
                                on_progress=progress)
    except BaseException:
        if made and not any(out.iterdir()):  # a refused checkpoint or corpus leaves no empty folder behind
            out.rmdir()
        raise
    click.echo(sweeping.format_summary(result))
    click.echo(f"wrote {out}/: report.html, report.md, metrics.csv/json, summary.csv, sweep.png/svg, "
               f"spectrum.png/svg, samples/ in {result.timings['total_s']:.1f}s", err=True)
    if check and not result.passed:
        raise click.ClickException("the spectrum does not hold: " + "; ".join(c.name for c in result.checks if not c.passed))
