"""`charrnn runs` and `charrnn export`: listing the runs, and exporting one for other runtimes."""

from __future__ import annotations

from pathlib import Path

import click

from ..progress import fmt_time
from .common import CHECKPOINT_ROOT


@click.command()
@click.argument("run", type=click.Path(path_type=Path), metavar="RUN")
@click.option("--format", "fmt", type=click.Choice(["safetensors", "onnx"]), required=True, help="safetensors: the weights (+ config.json); onnx: a graph of one generation step.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder to write into.  [default: exports/<run name>]")
def export(run: Path, fmt: str, out: Path | None) -> None:
    """Export RUN (a run folder or .pt file) for other runtimes, with a config.json of the model
    config and vocabulary; loadable without charrnn (see the README)."""
    from ..checkpoint import load
    from ..export import export as export_model

    ckpt = load(run)
    out = out or Path("exports") / (run.parent if run.is_file() else run).resolve().name
    path = export_model(ckpt, out, fmt)
    click.echo(f"wrote {path} and {path.parent / 'config.json'} (from {ckpt.path})")


@click.command()
@click.argument("root", type=click.Path(path_type=Path), default=CHECKPOINT_ROOT, metavar="[DIR]")
@click.option("--sort", type=click.Choice(["date", "loss", "name"]), default="date", show_default=True, help="date: last saved first; loss: best validation loss first.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True, help="jsonl: one JSON object per run (every field, nats and bits).")
def runs(root: Path, sort: str, fmt: str) -> None:
    """List the runs below DIR (default checkpoints/): corpus, model, steps, best loss, time, date."""
    import json

    from ..runs import list_runs

    found = list_runs(root, sort=sort)
    if fmt == "jsonl":
        for run in found:
            click.echo(json.dumps(run.to_dict(), ensure_ascii=False))
        return
    if not found:
        click.echo(f"no runs under {root}/", err=True)
        return
    click.echo(f"{'RUN':<24} {'CORPUS':<18} {'MODEL':<14} {'PARAMS':>7} {'STEPS':>7} {'BEST VAL (nats/bits)':>20} "
               f"{'TIME':>8}  {'DATE':<16}  FROM")
    for run in found:
        if run.problem:
            click.echo(f"{run.name:<24} ({run.problem})")
            continue
        model = f"{run.model or '?'} {run.num_layers or '?'}x{run.hidden_size or '?'}"
        params = f"{run.parameters / 1e6:.2f}M" if run.parameters else "?"
        loss = "-" if run.best_val_loss is None else f"{run.best_val_loss:.4f} / {run.best_val_bits:.3f}"
        origin = ", ".join(([f"fine-tuned from {run.fine_tuned_from}"] if run.fine_tuned_from else [])
                           + (["resumed"] if run.resumed else [])) or "-"
        date = (run.updated or "?")[:16].replace("T", " ")
        click.echo(f"{run.name:<24} {run.corpus or '?':<18} {model:<14} {params:>7} {run.steps if run.steps is not None else '?':>7} "
                   f"{loss:>20} {fmt_time(run.elapsed):>8}  {date:<16}  {origin}")
