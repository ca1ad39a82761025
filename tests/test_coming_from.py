"""docs/COMING_FROM.md names only options charrnn has: every `--option` in its charrnn column exists."""

import re
from pathlib import Path

import click

from charrnn.cli import main

DOC = Path(__file__).resolve().parent.parent / "docs" / "COMING_FROM.md"


def _options(command: click.Command) -> set[str]:
    names = set()
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


def test_every_charrnn_option_the_guide_names_exists():
    known = _options(main.commands["train"]) | _options(main.commands["sample"])
    named = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            charrnn_column = line.rstrip("|").rsplit("|", 1)[-1]
            named.update(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", charrnn_column))
    for prose_option in re.findall(r"`(--[a-z][a-z-]*)", DOC.read_text(encoding="utf-8").split("## Where")[1]):
        named.add(prose_option)
    named -= {"--format", "--nproc_per_node", "-m"}  # export's option; torchrun's; python's
    assert len(named) > 30
    assert sorted(named - known) == []
