"""`charrnn data get` and `charrnn data list`: the named corpora."""

from __future__ import annotations

from pathlib import Path

import click

from .common import _FullHelpGroup


@click.group(cls=_FullHelpGroup)
def data() -> None:
    """Get named corpora (tiny Shakespeare, Paul Graham essays)."""


class _CorpusHelpCommand(click.Command):
    """`data get --help` lists the corpus names; charrnn.corpora is imported only when help is shown,
    so `charrnn --help` stays instant."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from ..corpora import CORPORA

        super().format_help_text(ctx, formatter)
        with formatter.section("Corpora (NAME)"):
            formatter.write_dl([(corpus.name, corpus.description) for corpus in CORPORA.values()])


@data.command("get", cls=_CorpusHelpCommand)
@click.argument("name")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), show_default=True, help="Where to put it.")
@click.option("--mirror", type=click.Path(file_okay=False, path_type=Path), default=None, help="Copy from this local folder instead of downloading.  [default: $CHARRNN_DATA_MIRROR]")
@click.option("--url", default=None, help="Download from this address instead of the public one.")
@click.option("--force", is_flag=True, help="Fetch again, replacing the file there (even one that does not match the sha256).")
def data_get(name: str, data_dir: Path, mirror: Path | None, url: str | None, force: bool) -> None:
    """Fetch corpus NAME into --data-dir, verifying its sha256."""
    from ..corpora import get

    path = get(name, data_dir, mirror=mirror, url=url, force=force, log=lambda message: click.echo(message, err=True))
    click.echo(f"{name}: {path} ({path.stat().st_size:,} bytes, sha256 verified)")


@data.command("list")
def data_list() -> None:
    """List the corpora `charrnn data get` knows."""
    from ..corpora import CORPORA

    for corpus in CORPORA.values():
        click.echo(f"{corpus.name:<12} {corpus.description}")
