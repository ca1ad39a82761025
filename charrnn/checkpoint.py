"""Run folders and checkpoint files: atomic writes, validated loads, the only `torch.load`.

A run folder holds:
  best.pt       weights of the best validation loss so far + metadata   (what `sample` loads)
  last.pt       latest weights + metadata + training state              (what `--resume` loads)
  meta.json     a human-readable copy of the latest metadata (configs, vocabulary, history)
  metrics.jsonl per-step training log; losses.png the loss curves

Each .pt is one self-contained file (weights and metadata together), so a reader never pairs
weights with the metadata of another save. Files are written to a temporary name, fsynced and
renamed into place: a crash or kill at any moment leaves the previous file intact.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .errors import CharRNNError
from .model import CharRNN
from .vocab import Vocab

FORMAT_VERSION = 1
BEST = "best.pt"
LAST = "last.pt"
META = "meta.json"
MAX_META_JSON_BYTES = 64 << 20


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through `write(fileobj)` into a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    module = getattr(model, "_orig_mod", model)  # never save torch.compile's wrapper names
    module = getattr(module, "module", module)  # nor DistributedDataParallel's
    return {k: v.detach().to("cpu", torch.float32) for k, v in module.state_dict().items()}


def save(path: str | os.PathLike, model: torch.nn.Module, meta: dict[str, Any],
         train_state: dict[str, Any] | None = None) -> Path:
    """Write one checkpoint file atomically. `meta` must be plain JSON data."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "meta": meta,
        "model": _cpu_state_dict(model),
    }
    if train_state is not None:
        payload["train_state"] = train_state
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as exc:
        raise CharRNNError(f"could not write checkpoint {path}: {exc.strerror or exc}; "
                           "the previous checkpoint is unchanged") from None
    return path


def write_meta(run_dir: str | os.PathLike, meta: dict[str, Any]) -> None:
    text = json.dumps(meta, ensure_ascii=False, indent=1)
    try:
        atomic_write(Path(run_dir) / META, lambda f: f.write(text), mode="w")
    except OSError as exc:
        raise CharRNNError(f"could not write {Path(run_dir) / META}: {exc.strerror or exc}") from None


@dataclass
class Checkpoint:
    model: CharRNN
    vocab: Vocab
    meta: dict[str, Any]
    path: Path
    train_state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def model_config(self) -> ModelConfig:
        return self.model.config


def resolve_path(path: str | os.PathLike, prefer: str = BEST) -> Path:
    """A run folder -> its `prefer` file (falling back to the other); a file -> itself."""
    path = Path(path)
    if path.is_dir():
        for name in (prefer, LAST if prefer == BEST else BEST):
            if (path / name).is_file():
                return path / name
        raise CharRNNError(f"{path} holds no checkpoint ({BEST} or {LAST})")
    if not path.exists():
        raise CharRNNError(f"checkpoint {path} does not exist")
    return path


def _read(path: Path) -> Any:
    try:
        # The single place the project unpickles anything: weights_only refuses every object
        # that is not plain data or a tensor, so a crafted checkpoint cannot run code.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. pickle-protocol notes about a file we refuse anyway
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        raise CharRNNError(f"refusing {path}: it holds Python objects, not plain checkpoint data ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError, AttributeError) as exc:
        lines = str(exc).strip().splitlines()
        reason = lines[0][:160] if lines else type(exc).__name__
        raise CharRNNError(f"{path} is not a readable charrnn checkpoint (truncated or corrupt?): {reason}") from None


def validate_meta(meta: Any, where: str = "checkpoint") -> tuple[ModelConfig, Vocab]:
    """Check the metadata's types and internal consistency before any tensor is used."""
    if not isinstance(meta, dict):
        raise CharRNNError(f"{where}: metadata is not a mapping")
    version = meta.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version < 1:
        raise CharRNNError(f"{where}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CharRNNError(f"{where} uses checkpoint format {version}, newer than this charrnn "
                           f"understands ({FORMAT_VERSION}); upgrade charrnn")
    try:
        model_config = ModelConfig.from_dict(meta.get("model_config"))
    except CharRNNError as exc:
        raise CharRNNError(f"{where}: {exc}") from None
    chars = meta.get("vocab")
    if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
        raise CharRNNError(f"{where}: vocabulary is missing or not a list of characters")
    try:
        vocab = Vocab(chars)
    except CharRNNError as exc:
        raise CharRNNError(f"{where}: {exc}") from None
    if len(vocab) != model_config.vocab_size:
        raise CharRNNError(f"{where}: vocabulary has {len(vocab)} characters but the model "
                           f"expects {model_config.vocab_size}")
    return model_config, vocab


def _check_state_dict(state: Any, model: CharRNN, where: Path) -> None:
    if not isinstance(state, dict):
        raise CharRNNError(f"{where}: weights are missing")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CharRNNError(f"{where}: weights do not match the configured model "
                           f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for key, tensor in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(tensor.shape):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CharRNNError(f"{where}: weight {key} has shape {shape}, expected {tuple(tensor.shape)}")
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise CharRNNError(f"{where}: weight {key} is not finite floating-point data")


def load(path: str | os.PathLike, device: str | torch.device = "cpu", prefer: str = BEST) -> Checkpoint:
    """Load a checkpoint file or run folder onto `device`, validating everything first."""
    file = resolve_path(path, prefer)
    if file.is_dir():
        raise CharRNNError(f"{file} is a directory, not a checkpoint file")
    payload = _read(file)
    if not isinstance(payload, dict) or "meta" not in payload or "model" not in payload:
        raise CharRNNError(f"{file} is not a charrnn checkpoint")
    version = payload.get("format_version")
    if not isinstance(version, int):
        raise CharRNNError(f"{file}: bad format_version {version!r}")
    meta = payload["meta"]
    if isinstance(meta, dict):
        meta = {**meta, "format_version": version}
    model_config, vocab = validate_meta(meta, str(file))
    model = CharRNN(model_config)
    _check_state_dict(payload["model"], model, file)
    model.load_state_dict(payload["model"], strict=True)
    model.to(device).eval()
    train_state = payload.get("train_state")
    if train_state is not None and not isinstance(train_state, dict):
        raise CharRNNError(f"{file}: training state is malformed")
    return Checkpoint(model=model, vocab=vocab, meta=meta, path=file, train_state=train_state)


def read_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / META
    try:
        if path.stat().st_size > MAX_META_JSON_BYTES:
            raise CharRNNError(f"{path} is implausibly large")
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CharRNNError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CharRNNError(f"{path} is unreadable: {exc}") from None


def find_latest(root: str | os.PathLike = "checkpoints") -> Path:
    """The run folder under `root` whose checkpoint was written most recently."""
    root = Path(root)
    best: tuple[float, Path] | None = None
    if root.is_dir():
        for run in root.iterdir():
            for name in (BEST, LAST):
                file = run / name
                if file.is_file():
                    mtime = file.stat().st_mtime
                    if best is None or mtime > best[0]:
                        best = (mtime, run)
    if best is None:
        raise CharRNNError(f"no trained run found under {root}/; train one with `charrnn train FILE` "
                           "or pass --checkpoint")
    return best[1]


def finite_or_none(value: float | None) -> float | None:
    """JSON has no inf/nan: store them as null."""
    return value if value is not None and math.isfinite(value) else None
