"""Every ```python block of README.md runs as written.

Each block runs in a fresh folder holding small stand-ins for the files READMEs name: a short
play-like `data/shakespeare.txt` and `data/paulgraham.txt`, an `essays/` folder, and a tiny trained
run at every `checkpoints/NAME` a block reads (a run the block trains itself is left to it). A new
block needs nothing here unless it uses a name it does not define (see `_GIVEN`).

The test checks that the code works, not how long the README's settings take, so it caps the amount
of work and says so: `TrainConfig`'s default `max_steps` is 1 while a block runs (a block's own
`time_budget=120` stays; a run stops at whichever limit comes first, as it would for a user), and
`stream()` yields at most 5,000 characters. Nothing else is changed: the blocks' imports, calls,
arguments and files are the user's. (A test-only switch inside the library, an environment variable
that shortens training, would put test code in what users run; these patches live and end here.)
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import shutil
from pathlib import Path

import pytest
from training_procs import one_thread

from charrnn.config import ModelConfig, TrainConfig

README = Path(__file__).resolve().parent.parent / "README.md"
MAX_STEPS = 1
MAX_STREAM = 5_000


def python_blocks() -> list[tuple[int, str]]:
    """(first line number, code) of each ```python block."""
    blocks, lines, start = [], README.read_text(encoding="utf-8").splitlines(), None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start, code = number + 1, []
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(code) + "\n"))
            start = None
        elif start is not None:
            code.append(line)
    return blocks


def _given_ids() -> dict:
    from charrnn.data import encode
    from charrnn.vocab import Vocab

    text = _text(200)
    vocab = Vocab.from_text(text)
    return {"ids": encode(text, vocab), "vocab": vocab}


# Names a block uses without defining them ("ids you already have"), keyed by a fragment of the block.
_GIVEN = {"EncodedCorpus.from_ids(ids, vocab": _given_ids}

_VERSE = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
          "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name.\n\n")


def _text(repeats: int) -> str:
    return _VERSE * repeats


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The files README blocks name, small: corpora, essays, and one tiny run for every checkpoint."""
    from charrnn.train import train

    root = tmp_path_factory.mktemp("readme-world")
    (root / "data").mkdir()
    for name in ("shakespeare", "paulgraham"):
        (root / "data" / f"{name}.txt").write_text(_text(80), encoding="utf-8")
    (root / "essays").mkdir()
    for i in range(3):
        (root / "essays" / f"essay{i}.txt").write_text(_text(30 + 10 * i), encoding="utf-8")
    tiny = root / "tiny-run"
    with one_thread():
        train(_text(40), tiny, ModelConfig(embed_dim=8, hidden_size=16, num_layers=1, dropout=0.0),
              TrainConfig(batch_size=4, seq_len=16, max_steps=4, time_budget=None, eval_interval=4,
                          device="cpu", precision="fp32", sample_length=0))
    return root


def _runs_to_provide(code: str) -> list[str]:
    """checkpoints/NAME the block reads, leaving out the runs it trains itself."""
    named = set(re.findall(r"checkpoints/([\w.-]+)", code))
    trained = set(re.findall(r"train\([^\n]*[\"']checkpoints/([\w.-]+)", code))
    return sorted(named - trained)


@pytest.fixture
def capped_work(monkeypatch):
    """The module docstring's two caps, undone after each block."""
    defaults = dict(zip([f.name for f in dataclasses.fields(TrainConfig) if f.init], TrainConfig.__init__.__defaults__,
                        strict=True))
    defaults["max_steps"] = MAX_STEPS
    monkeypatch.setattr(TrainConfig.__init__, "__defaults__", tuple(defaults.values()))
    sample = importlib.import_module("charrnn.sample")
    real_stream = sample.stream

    def stream(model, vocab, length, *args, **kwargs):
        return real_stream(model, vocab, min(length, MAX_STREAM), *args, **kwargs)

    monkeypatch.setattr(sample, "stream", stream)


# A block may read a file the short way, `open(f).read()`: CPython closes it at once, and users never see
# the ResourceWarning (Python ignores it by default), so neither does this test.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("line, code", python_blocks(), ids=[f"README.md:{line}" for line, _ in python_blocks()])
def test_readme_python_block_runs_as_written(line, code, world, tmp_path, monkeypatch, capped_work):
    cwd = tmp_path / "cwd"
    shutil.copytree(world, cwd, ignore=shutil.ignore_patterns("tiny-run"))
    for name in _runs_to_provide(code):
        shutil.copytree(world / "tiny-run", cwd / "checkpoints" / name)
    monkeypatch.chdir(cwd)
    namespace: dict = {"__name__": "__readme__"}
    for fragment, given in _GIVEN.items():
        if fragment in code:
            namespace.update(given())
    with one_thread():
        exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 - the README is ours


def test_the_readme_has_python_blocks_and_the_package_names_are_the_documented_ones():
    # The harness above would pass vacuously if the fences changed; and `from charrnn import train`
    # must give the function however the package was imported before (`import charrnn.train` binds
    # the submodule of the same name as a package attribute unless the package prevents it).
    assert len(python_blocks()) >= 4
    import charrnn
    import charrnn.train  # noqa: F401 - the import that used to shadow the function
    from charrnn import CorpusFiles, EncodedCorpus, train

    assert callable(train) and train.__name__ == "train" and charrnn.train is train
    for name in charrnn._LAZY:
        value = getattr(charrnn, name)
        assert callable(value) and not isinstance(value, type(charrnn)), name
    assert CorpusFiles.__name__ == "CorpusFiles" and EncodedCorpus.__name__ == "EncodedCorpus"
    assert importlib.import_module("charrnn.train").Trainer  # the module is still there by its full name
