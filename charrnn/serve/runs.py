"""The runs the playground may load: the run folders directly under RUNS_DIR, found by listing it.

A request names a run by its id (the folder's name, as the listing gives it); the id is looked up
in a fresh listing and never joined onto a path, so no string from a request reaches the file
system. A folder, or a checkpoint inside one, that is a symbolic link leading outside RUNS_DIR is
not listed.

`list_runs` reads each run's `meta.json` (plain JSON, never unpickled). It stands in for the
library's run listing (issue 17: `charrnn/runs.py: list_runs`) until that lands.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CharRNNError

CHECKPOINT_NAMES = ("best.pt", "last.pt")
MAX_RUNS = 1000  # a RUNS_DIR with more folders than this is listed up to here


@dataclass(frozen=True)
class RunInfo:
    """One loadable run folder, described from its meta.json (fields None where not recorded)."""

    id: str
    checkpoint: Path  # the file `checkpoint.load` reads (best.pt, else last.pt)
    corpus: str | None
    model: str | None  # "lstm", "gru" or "rnn"
    num_layers: int | None
    hidden_size: int | None
    vocab_size: int | None
    val_loss: float | None  # best validation loss, nats/char
    step: int | None
    updated: str | None  # ISO date of the last save
    mtime: float  # of the checkpoint file, for ordering

    def record(self) -> dict[str, Any]:
        """JSON-ready description (no file-system path: the page needs none)."""
        size = None
        if self.num_layers and self.hidden_size and self.model:
            size = f"{self.num_layers}x{self.hidden_size} {self.model.upper()}"
        return {"id": self.id, "corpus": self.corpus, "size": size, "model": self.model,
                "num_layers": self.num_layers, "hidden_size": self.hidden_size, "vocab_size": self.vocab_size,
                "val_loss": self.val_loss,
                "val_bits": None if self.val_loss is None else self.val_loss / math.log(2.0),
                "step": self.step, "updated": self.updated}


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):  # missing, a link loop, unreadable
        return False


def _meta(folder: Path) -> dict[str, Any]:
    from ..checkpoint import read_meta

    try:
        meta = read_meta(folder)
    except CharRNNError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _field(data: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, kind):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _describe(folder: Path, checkpoint: Path) -> RunInfo:
    meta = _meta(folder)
    config = meta.get("model_config")
    corpus = meta.get("corpus")
    vocab = meta.get("vocab")
    return RunInfo(
        id=folder.name, checkpoint=checkpoint,
        corpus=_field(corpus, "name", str),
        model=_field(config, "model", str), num_layers=_field(config, "num_layers", int),
        hidden_size=_field(config, "hidden_size", int),
        vocab_size=len(vocab) if isinstance(vocab, list) else None,
        val_loss=_field(meta, "best_val_loss", (int, float)), step=_field(meta, "step", int),
        updated=_field(meta, "updated", str), mtime=checkpoint.stat().st_mtime)


def _run_folders(root: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(folder, checkpoint file) of every run folder directly under `root`, by name."""
    root_path = Path(root)
    try:
        real_root = root_path.resolve(strict=True)
        entries = sorted(os.scandir(root_path), key=lambda e: e.name)[:MAX_RUNS]
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith(".") or not _inside(Path(entry.path), real_root):
            continue
        folder = Path(entry.path)
        if not folder.is_dir():
            continue
        for name in CHECKPOINT_NAMES:
            file = folder / name
            if file.is_file() and _inside(file, real_root):
                found.append((folder, file))
                break
    return found


def list_runs(root: str | os.PathLike) -> list[RunInfo]:
    """Every run folder directly under `root` holding a checkpoint, most recently saved first."""
    runs = []
    for folder, file in _run_folders(root):
        try:
            runs.append(_describe(folder, file))
        except OSError:
            pass
    runs.sort(key=lambda r: -r.mtime)
    return runs


def find_run(root: str | os.PathLike, run_id: Any) -> RunInfo:
    """The listed run whose id is `run_id`; anything else (a path, '..', an unlisted name) is unknown."""
    if not isinstance(run_id, str) or not run_id:
        raise UnknownRunError("run must be the id of a run from the list (a folder name)")
    for folder, file in _run_folders(root):
        if folder.name == run_id:  # what loading needs, without reading meta.json (it can be large)
            try:
                return RunInfo(id=folder.name, checkpoint=file, corpus=None, model=None, num_layers=None,
                               hidden_size=None, vocab_size=None, val_loss=None, step=None, updated=None,
                               mtime=file.stat().st_mtime)
            except OSError:
                break
    shown = run_id if len(run_id) <= 80 else run_id[:77] + "..."
    raise UnknownRunError(f"no run {shown!r} under the runs folder (see /api/runs)")


class UnknownRunError(CharRNNError):
    """The request named a run that is not in the listing (HTTP 404)."""
