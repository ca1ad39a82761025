"""`charrnn cache list` and `charrnn cache clear`: the encoded corpora kept between runs."""

from __future__ import annotations

from pathlib import Path

import click

from .common import _FullHelpGroup


def _size(num_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} B"


_cache_dir_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The corpus cache.  [default: $CHARRNN_CACHE_DIR, else ~/.cache/charrnn]")


@click.group(cls=_FullHelpGroup)
def cache() -> None:
    """The corpus cache: encoded corpora kept between runs (safe to clear)."""


@cache.command("list")
@_cache_dir_option
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True, help="jsonl: one JSON object per entry.")
def cache_list(cache_dir: Path | None, fmt: str) -> None:
    """List the cache's entries: corpus, size and last use, most recent first."""
    import json

    from ..cache_admin import list_entries
    from ..corpus_cache import default_cache_dir

    entries = list_entries(cache_dir)
    if fmt == "jsonl":
        for entry in entries:
            click.echo(json.dumps(entry.to_dict(), ensure_ascii=False))
        return
    click.echo(f"{cache_dir or default_cache_dir()}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
               f"{_size(sum(e.size_bytes for e in entries))}", err=True)
    if entries:
        click.echo(f"{'NAME':<40} {'SIZE':>9}  {'LAST USE':<16}  CORPUS")
    for entry in entries:
        used = entry.to_dict()["last_use"] or "?"
        click.echo(f"{entry.name:<40} {_size(entry.size_bytes):>9}  {used[:16].replace('T', ' '):<16}  {entry.corpus}")


@cache.command("clear")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@_cache_dir_option
def cache_clear(names: tuple[str, ...], cache_dir: Path | None) -> None:
    """Remove cache entries (all, or those NAME matches: an entry's name, its corpus part, or its
    corpus file) that no running run is using; the others are kept and listed with the reason."""
    from ..cache_admin import clear

    result = clear(cache_dir, names)
    for entry in result.removed:
        click.echo(f"removed {entry.name} ({_size(entry.size_bytes)}, {entry.corpus})")
    for entry, why in result.skipped:
        click.echo(f"kept {entry.name}: {why}")
    freed = sum(e.size_bytes for e in result.removed)
    click.echo(f"removed {len(result.removed)} entr{'y' if len(result.removed) == 1 else 'ies'} ({_size(freed)}), "
               f"kept {len(result.skipped)}", err=True)
