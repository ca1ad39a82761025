"""`charrnn serve`: the local web playground (charrnn.serve)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import CharRNNError
from .common import CHECKPOINT_ROOT


@click.command()
@click.argument("runs_dir", type=click.Path(file_okay=False, path_type=Path), default=CHECKPOINT_ROOT,
                metavar="[RUNS_DIR]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless --allow-remote).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port to listen on.  [default: a free one, printed]")
@click.option("--allow-remote", is_flag=True, help="Allow a --host other machines can reach (anyone who can reach it can use the models).")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
def serve(runs_dir: Path, host: str, port: int, allow_remote: bool, device: str) -> None:
    """A local web playground over the runs in RUNS_DIR (default: checkpoints/).

    Pick a run, type a prime, move the temperature and watch the text stream in with each
    character's top candidates; compare settings side by side; colour text by a neuron. The page
    calls a JSON API that scripts can use too (see the README's Playground section).
    """
    try:
        from ..serve.server import run_server
    except ImportError as exc:  # starlette/uvicorn are an optional extra
        raise CharRNNError(f"charrnn serve needs the serve extra ({exc.name} is missing): "
                           "pip install 'charrnn[serve]'") from None
    stopped_by = run_server(runs_dir, host=host, port=port, allow_remote=allow_remote, device=device,
                            echo=lambda line: click.echo(line, err=line.startswith("warning")))
    click.echo(f"playground stopped{f' ({stopped_by})' if stopped_by else ''}", err=True)
