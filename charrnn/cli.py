"""Command-line interface: parse options, call the library, print. No work happens here.

This module is the `charrnn` group (one-line errors, UTF-8 output) and the list of its commands;
each command lives in charrnn/commands/, one module per command or command group. torch is
imported inside the commands, so `charrnn --help` answers instantly.
"""

from __future__ import annotations

import codecs
import sys
from typing import Any

import click

from .commands import cache, data, explain, runs, sample, score, serve, sweep, train
from .commands.common import _FullHelpGroup
from .errors import CharRNNError


class _Group(_FullHelpGroup):
    """Turns library errors into one line and a non-zero exit instead of a traceback."""

    group_class = _FullHelpGroup  # `charrnn data` and other command groups list their commands in full too

    def main(self, *args: Any, **kwargs: Any) -> Any:
        _write_utf8()
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CharRNNError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:  # `charrnn sample | head` closed the pipe: not an error
            sys.stderr.close()
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(130)
        except MemoryError:
            raise click.ClickException("out of memory; try a smaller --batch-size or model") from None
        except OSError as exc:  # the file system refused (disk full, permissions, I/O): say what and where
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None


def _write_utf8() -> None:
    """Every command writes UTF-8, whatever the terminal's or locale's encoding claims.

    Models write any character of their corpus, and a stream that could not encode one would fail
    half-way through a sample (PYTHONIOENCODING=ascii, a latin-1 locale, Windows' cp1252 pipes).
    UTF-8 is what the corpus, the checkpoints and every file charrnn writes hold, and what Python's
    own UTF-8 mode (PEP 540, on by default in the C locale) uses, with the same error handlers: the
    bytes of an undecodable file name are written back as they came; stderr escapes what it cannot.
    """
    for name, errors in (("stdout", "surrogateescape"), ("stderr", "backslashreplace")):
        stream = getattr(sys, name)
        try:
            is_utf8 = codecs.lookup(stream.encoding).name == "utf-8"
        except (AttributeError, LookupError, TypeError):  # no stream (pythonw), or not a text file
            continue
        if not is_utf8 and hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors=errors)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="charrnn", message="charrnn %(version)s")
def main() -> None:
    """charrnn: train character-level LSTM/GRU/RNN models on text and sample from them.

    \b
    charrnn data get shakespeare      put tiny Shakespeare at data/shakespeare.txt
    charrnn train data/shakespeare.txt
    charrnn sample -t 0.5             sample the most recent run
    """


# Every command, registered in one place: a new command is a module in charrnn/commands/ and an entry here.
# (`--help` lists them in alphabetical order, whatever the order here.)
for _command in (train.train, sample.sample, sample.inspect, score.score, explain.explain, data.data,
                 runs.export, runs.runs, cache.cache, serve.serve, sweep.sweep):
    main.add_command(_command)


if __name__ == "__main__":
    main()
