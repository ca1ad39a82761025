"""What several commands share: the run folders' root, the help layout of command groups, finding
the run a command works on, and the note printed before reading a terminal."""

from __future__ import annotations

import sys
from pathlib import Path

import click

CHECKPOINT_ROOT = "checkpoints"


class _FullHelpGroup(click.Group):
    """Lists each command with its whole first sentence, wrapped: click's default cuts it at the
    terminal's width with "...", which left most descriptions unfinished."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _checkpoint_path(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """An empty -c would become '.' and load whatever the current folder holds: refuse it."""
    if value is not None and not value.strip():
        raise click.BadParameter("is empty; give a run folder or a .pt file (or leave -c out for the most recent run)")
    return None if value is None else Path(value)


# The -c option of every command that reads a checkpoint.
checkpoint_option = click.option("-c", "--checkpoint", type=click.Path(), callback=_checkpoint_path, default=None,
                                 help="Run folder or .pt file.  [default: the most recent run]")


def _checkpoint_dir(checkpoint: Path | None) -> Path:
    from ..checkpoint import find_latest

    if checkpoint is not None:
        return checkpoint
    run = find_latest(CHECKPOINT_ROOT)
    click.echo(f"using the most recent run: {run}", err=True)
    return run


def _stdin_note(what: str) -> None:
    """Reading a terminal waits for typing: say so, so a forgotten pipe does not look like a hang."""
    if sys.stdin is not None and sys.stdin.isatty():
        click.echo(f"reading {what} from standard input; end it with Ctrl-D", err=True)


def _prepare_threads(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Runs while the options are parsed, before the command imports torch: OpenMP reads its
    waiting policy once, when torch loads (see charrnn.threads)."""
    from ..threads import prepare_process

    prepare_process(value)


# Every command that computes takes it; the count itself is set when the work starts.
_threads_option = click.option(
    "--threads", default=None, metavar="N|auto", expose_value=False, callback=_prepare_threads,
    help="CPU threads for torch and NumPy (a fixed N also repeats runs bit for bit).  "
         "[default: $CHARRNN_THREADS, else auto: the cores other programs leave free, re-checked while training]")
