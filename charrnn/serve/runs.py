"""The runs the playground may load: the run folders directly under RUNS_DIR, as the library lists them.

The listing is `charrnn.runs.list_runs` (what `charrnn runs` shows, from each run's `meta.json`:
plain JSON, never unpickled), narrowed to what the server may load: a folder directly under
RUNS_DIR holding a checkpoint, where neither the folder nor the checkpoint is a symbolic link
leading outside RUNS_DIR.

A request names a run by its id (the folder's name, as the listing gives it); `find_run` compares
the id with the names of the folders under RUNS_DIR and never joins it onto a path, so no string
from a request reaches the file system.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CharRNNError
from ..runs import CHECKPOINT_FILES, RunInfo
from ..runs import list_runs as library_runs

MAX_RUNS = 1000  # a RUNS_DIR with more runs than this is listed up to here (most recent first)


@dataclass(frozen=True)
class Run:
    """A run the server may load: its id and the checkpoint file `checkpoint.load` reads."""

    id: str
    checkpoint: Path  # best.pt, else last.pt
    mtime: float  # of the checkpoint: a run retrained since it was loaded is loaded again


def record(info: RunInfo) -> dict[str, Any]:
    """A listed run as the page shows it (no file-system path: the page needs none)."""
    size = None
    if info.num_layers and info.hidden_size and info.model:
        size = f"{info.num_layers}x{info.hidden_size} {info.model.upper()}"
    return {"id": info.name, "corpus": info.corpus, "size": size, "model": info.model,
            "num_layers": info.num_layers, "hidden_size": info.hidden_size, "parameters": info.parameters,
            "val_loss": info.best_val_loss, "val_bits": info.best_val_bits, "step": info.steps,
            "updated": info.updated, "problem": info.problem}


def _real_root(root: str | os.PathLike) -> Path | None:
    try:
        return Path(root).resolve(strict=True)
    except (OSError, RuntimeError):
        return None


def _inside(path: Path, real_root: Path) -> bool:
    try:
        return path.resolve(strict=True).is_relative_to(real_root)
    except (OSError, RuntimeError):  # missing, a link loop, unreadable
        return False


def _loadable(folder: Path, real_root: Path) -> Run | None:
    """The run in `folder` if the server may load it: a folder inside RUNS_DIR with a checkpoint inside it."""
    if folder.name.startswith(".") or not folder.is_dir() or not _inside(folder, real_root):
        return None
    for name in CHECKPOINT_FILES:
        file = folder / name
        if file.is_file() and _inside(file, real_root):
            try:
                return Run(id=folder.name, checkpoint=file, mtime=file.stat().st_mtime)
            except OSError:
                return None
    return None


def list_runs(root: str | os.PathLike) -> list[RunInfo]:
    """The library's listing of the runs under `root` that the server may load, most recently saved first."""
    real_root = _real_root(root)
    if real_root is None:
        return []
    return [info for info in library_runs(root, sort="date")
            if Path(info.path).parent == Path(root) and _loadable(Path(info.path), real_root)][:MAX_RUNS]


def find_run(root: str | os.PathLike, run_id: Any) -> Run:
    """The listed run whose id is `run_id`; anything else (a path, '..', an unlisted name) is unknown.

    The folders under `root` are scanned and their names compared with `run_id` (no meta.json is
    read: it can be large); the match must pass the listing's own test."""
    if not isinstance(run_id, str) or not run_id:
        raise UnknownRunError("run must be the id of a run from the list (a folder name)")
    real_root = _real_root(root)
    try:
        names = [entry.name for entry in os.scandir(root)] if real_root is not None else []
    except OSError:
        names = []
    for name in names:
        if name == run_id:
            run = _loadable(Path(root) / name, real_root)  # type: ignore[arg-type]
            if run is not None:
                return run
    shown = run_id if len(run_id) <= 80 else run_id[:77] + "..."
    raise UnknownRunError(f"no run {shown!r} under the runs folder (see /api/runs)")


class UnknownRunError(CharRNNError):
    """The request named a run that is not in the listing (HTTP 404)."""

