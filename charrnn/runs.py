"""The runs under a folder (`checkpoints/` by default), read from each run's `meta.json`.

Only plain JSON is read (never a checkpoint, never a pickle) and torch is not imported, so listing
is instant however many runs there are. A folder that is not a run (no `meta.json`, no `.pt`) is
passed over; a run whose `meta.json` is missing, half-written or foreign is listed with `problem`
saying what is wrong, never an exception. `charrnn runs` and the web playground's run picker use it.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import ModelConfig

META = "meta.json"  # as checkpoint.META (not imported: that module imports torch)
CHECKPOINT_FILES = ("best.pt", "last.pt")
MAX_META_BYTES = 64 << 20
SORT_KEYS = ("date", "loss", "name")


@dataclass(frozen=True)
class RunInfo:
    """One run folder as a listing shows it. Fields are None where the metadata does not say."""

    name: str
    path: str
    corpus: str | None = None
    model: str | None = None  # lstm | gru | rnn
    num_layers: int | None = None
    hidden_size: int | None = None
    parameters: int | None = None
    steps: int | None = None
    best_val_loss: float | None = None  # nats/char
    best_val_bits: float | None = None  # bits/char: nats / ln 2
    best_step: int | None = None
    elapsed: float | None = None  # seconds of training, over every session
    created: str | None = None  # ISO 8601, UTC
    updated: str | None = None  # ISO 8601, UTC: the last save
    resumed: bool = False  # continued with --resume at least once
    fine_tuned_from: str | None = None  # --init-from's checkpoint
    problem: str | None = None  # why the metadata could not be read (then most fields are None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def read_run(folder: str | os.PathLike) -> RunInfo:
    """The listing of one run folder; `problem` set (and the rest mostly None) if its metadata is unusable."""
    folder = Path(folder)
    base = {"name": folder.name, "path": str(folder)}
    meta_path = folder / META
    try:
        if meta_path.stat().st_size > MAX_META_BYTES:
            return RunInfo(**base, problem=f"{META} is implausibly large")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RunInfo(**base, problem=f"no {META} (a run that never finished its first save?)")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return RunInfo(**base, problem=f"{META} is unreadable ({type(exc).__name__})")
    if not isinstance(meta, dict) or not isinstance(meta.get("model_config"), dict):
        return RunInfo(**base, problem=f"{META} is not a charrnn run's metadata")
    model = meta["model_config"]
    try:
        parameters: int | None = ModelConfig.from_dict(model).num_parameters()
    except Exception:  # a foreign or damaged config: show what can be shown
        parameters = None
    corpus = meta.get("corpus") if isinstance(meta.get("corpus"), dict) else {}
    loss = _number(meta.get("best_val_loss"))
    resumed_at = meta.get("resumed_at")
    return RunInfo(
        **base,
        corpus=_text(corpus.get("name")) or (Path(corpus["path"]).name if _text(corpus.get("path")) else None),
        model=_text(model.get("model")),
        num_layers=_integer(model.get("num_layers")),
        hidden_size=_integer(model.get("hidden_size")),
        parameters=parameters,
        steps=_integer(meta.get("step")),
        best_val_loss=loss,
        best_val_bits=None if loss is None else loss / math.log(2.0),
        best_step=_integer(meta.get("best_step")),
        elapsed=_number(meta.get("elapsed")),
        created=_text(meta.get("created")),
        updated=_text(meta.get("updated")),
        resumed=isinstance(resumed_at, list) and bool(resumed_at),
        fine_tuned_from=_text(meta.get("init_from")),
    )


def _is_run(folder: Path) -> bool:
    return (folder / META).is_file() or any((folder / name).is_file() for name in CHECKPOINT_FILES)


def list_runs(root: str | os.PathLike = "checkpoints", sort: str = "date") -> list[RunInfo]:
    """Every run folder directly below `root` (or `root` itself if it is one), sorted by `sort`:
    "date" (most recently saved first), "loss" (best validation loss first, runs without one last)
    or "name". A missing `root` has no runs."""
    if sort not in SORT_KEYS:
        raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
    root = Path(root)
    if _is_run(root):
        folders = [root]
    else:
        try:
            folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_run(p))
        except (FileNotFoundError, NotADirectoryError):
            folders = []
    runs = [read_run(folder) for folder in folders]
    if sort == "name":
        return sorted(runs, key=lambda r: r.name)
    if sort == "loss":
        return sorted(runs, key=lambda r: (r.best_val_loss is None, r.best_val_loss or 0.0, r.name))
    return sorted(runs, key=lambda r: _timestamp(r.updated, Path(r.path)), reverse=True)


def _timestamp(iso: str | None, folder: Path) -> float:
    """When the run was last saved: its metadata's time, else the folder's."""
    if iso:
        try:
            return _dt.datetime.fromisoformat(iso).timestamp()
        except ValueError:
            pass
    try:
        return folder.stat().st_mtime
    except OSError:
        return 0.0
