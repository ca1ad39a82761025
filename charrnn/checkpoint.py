"""Run folders and checkpoint files: atomic writes, validated loads, the only `torch.load`.

A run folder holds:
  best.pt       weights of the best validation loss so far + metadata   (what `sample` loads)
  last.pt       latest weights + metadata + training state              (what `--resume` loads)
  meta.json     a human-readable copy of the latest metadata (configs, vocabulary, history)
  metrics.jsonl per-step training log; losses.png the loss curves

Each .pt is one self-contained file (weights and metadata together), so a reader never pairs
weights with the metadata of another save. Files are written through `charrnn.atomic` (a temporary
name, fsync, rename): a crash, kill or full disk at any moment leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write, temp_pattern
from .config import ModelConfig
from .errors import CharRNNError
from .model import CharRNN
from .vocab import Vocab

FORMAT_VERSION = 1
BEST = "best.pt"
LAST = "last.pt"
META = "meta.json"
MAX_META_JSON_BYTES = 64 << 20


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

    def serialise(f: Any) -> None:
        with _signals_held():
            torch.save(payload, f)

    try:
        atomic_write(path, serialise)
    except OSError as exc:
        raise CharRNNError(f"could not write checkpoint {path}: {exc.strerror or exc}; "
                           "the previous checkpoint is unchanged") from None
    return path


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Run the Python handlers of SIGINT/SIGTERM that arrive inside this block when it ends.

    torch.save drives its zip writer from C++ and calls back into Python for every write; an
    exception raised by a signal handler in there (a second Ctrl-C's KeyboardInterrupt) leaves the
    writer half-way, and the process then aborts ("terminate called ...") or fails with torch's
    internal RuntimeError. Held here, the handler runs as soon as the serialisation returns (it
    takes milliseconds); the slow part, fsync on a slow disk, stays interruptible.
    Handlers that are not Python functions (the defaults that kill the process) are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers only ever run in the main thread
        return
    held: list[int] = []
    previous: dict[int, Callable[..., Any]] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):  # restored in reverse: SIGINT last
        handler = signal.getsignal(sig)
        if callable(handler):
            previous[sig] = handler
            signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for sig in reversed(previous):
            signal.signal(sig, previous[sig])
        for signum in held:  # in order: a first Ctrl-C asks to stop, a second raises
            previous[signum](signum, None)


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


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes zip archives


def _read(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise CharRNNError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise CharRNNError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not head:
        raise CharRNNError(f"{path} is empty, not a checkpoint")
    if head != _ZIP_MAGIC and not head.startswith(b"\x80"):  # neither a torch zip nor a binary pickle
        raise CharRNNError(f"{path} is not a charrnn checkpoint (not a file torch.save wrote)")
    try:
        # The single place the project unpickles anything: weights_only refuses every object
        # that is not plain data or a tensor, so a crafted checkpoint cannot run code.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. pickle-protocol notes about a file we refuse anyway
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        raise CharRNNError(f"refusing {path}: it holds Python objects, not plain checkpoint data ({first[:160]})") from None
    except Exception as exc:  # the reader fails in many ways on damaged bytes (OSError, RuntimeError, IndexError...)
        lines = str(exc).strip().splitlines()
        if isinstance(exc, OSError):
            reason = "the file ends early or is damaged"
        elif lines and lines[0].startswith("[enforce fail"):  # torch's C++ checks say where, not what
            reason = "not an archive torch.save wrote, or a damaged one"
        else:
            reason = lines[0].split(". ")[0][:160] if lines else type(exc).__name__
        raise CharRNNError(f"{path} is not a readable charrnn checkpoint: truncated or corrupt ({reason})") from None


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
    if any("\ud800" <= c <= "\udfff" for c in chars):
        raise CharRNNError(f"{where}: vocabulary holds lone surrogates, which are not text characters")
    try:
        vocab = Vocab(chars)
    except CharRNNError as exc:
        raise CharRNNError(f"{where}: {exc}") from None
    if len(vocab) != model_config.vocab_size:
        raise CharRNNError(f"{where}: vocabulary has {len(vocab)} characters but the model "
                           f"expects {model_config.vocab_size}")
    _check_corpus(meta.get("corpus"), where)
    return model_config, vocab


# The entries of the training-text record that are read back: `sweep` opens `path` and reads `inputs`,
# `name` and `sha256`, and resume compares `sha256`. The others (sizes, the id file) are rewritten from
# the corpus on every resume and read by nothing, so they and any key a library caller adds are left alone.
_CORPUS_TEXT_KEYS = ("path", "name", "sha256")


def _check_corpus(corpus: Any, where: str) -> None:
    """The record of the training text, checked whenever present: it reaches file-system calls in `sweep`.

    None (for the whole record or one entry) means not recorded, which every reader handles.
    """
    if corpus is None:
        return
    if not isinstance(corpus, dict):
        raise CharRNNError(f"{where}: corpus must be a mapping, got {type(corpus).__name__}")
    for key in _CORPUS_TEXT_KEYS:
        value = corpus.get(key)
        if value is not None and not isinstance(value, str):
            raise CharRNNError(f"{where}: corpus {key} must be a string, got {type(value).__name__}")
    inputs = corpus.get("inputs")
    if inputs is not None and not (isinstance(inputs, list) and all(isinstance(p, str) for p in inputs)):
        raise CharRNNError(f"{where}: corpus inputs must be a list of file paths")


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
    # Compare the weights with the shapes the metadata implies on a storage-less "meta" model
    # first: metadata claiming a huge model must not make us allocate it.
    with torch.device("meta"):
        skeleton = CharRNN(model_config)
    _check_state_dict(payload["model"], skeleton, file)
    train_state = payload.get("train_state")
    if train_state is not None:
        _check_train_state(train_state, meta, skeleton, file)
    model = CharRNN(model_config)
    model.load_state_dict(payload["model"], strict=True)
    model.to(device).eval()
    return Checkpoint(model=model, vocab=vocab, meta=meta, path=file, train_state=train_state)


_HISTORY_KEYS = ("step", "epoch", "time", "train_loss", "val_loss", "lr")


def _is_int(value: Any, low: int = 0, high: int = 1 << 62) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_train_state(state: Any, meta: dict[str, Any], model: CharRNN, where: Path) -> None:
    """A resumable checkpoint's training state and bookkeeping, checked before a resume uses them.

    `model` may live on the meta device: only shapes are read.
    """
    def bad(what: str) -> CharRNNError:
        return CharRNNError(f"{where}: training state is malformed ({what}); resume from another "
                            "checkpoint or start a new run")

    if not isinstance(state, dict):
        raise bad("not a mapping")
    for key in ("step", "epoch", "index"):
        if not _is_int(state.get(key)):
            raise bad(f"{key} must be a non-negative integer")
    if not _is_int(state.get("bad_evals", 0)):
        raise bad("bad_evals must be a non-negative integer")
    first_loss = state.get("first_loss")
    if first_loss is not None and not _is_number(first_loss):
        raise bad("first_loss must be a finite number")
    rng = state.get("rng", {})
    if not isinstance(rng, dict):
        raise bad("rng must be a mapping")
    cpu_rng = rng.get("torch")
    if cpu_rng is not None and not (isinstance(cpu_rng, torch.Tensor) and cpu_rng.dtype == torch.uint8
                                    and cpu_rng.shape == torch.get_rng_state().shape):
        raise bad("the CPU random state has the wrong size or type")
    hidden = state.get("hidden")
    if hidden is not None:
        config = model.config
        count = 2 if config.model == "lstm" else 1
        if not isinstance(hidden, list) or len(hidden) != count or not all(isinstance(h, torch.Tensor) for h in hidden):
            raise bad(f"hidden must be a list of {count} tensor(s)")
        shape = tuple(hidden[0].shape)
        if (len(shape) != 3 or shape[0] != config.num_layers or shape[2] != config.hidden_size or shape[1] < 1
                or any(tuple(h.shape) != shape for h in hidden)):
            raise bad(f"hidden state has shape {shape}, expected ({config.num_layers}, batch, {config.hidden_size})")
        if not all(h.is_floating_point() and bool(torch.isfinite(h).all()) for h in hidden):
            raise bad("hidden state is not finite floating-point data")
    ema = state.get("ema")
    if ema is not None:
        shapes = [tuple(p.shape) for p in model.parameters()]
        if not isinstance(ema, list) or [tuple(t.shape) if isinstance(t, torch.Tensor) else None for t in ema] != shapes:
            raise bad("the weights' moving average does not match the model's parameters")
        if not all(t.is_floating_point() and bool(torch.isfinite(t).all()) for t in ema):
            raise bad("the weights' moving average is not finite floating-point data")
    _check_optimizer_state(state.get("optimizer"), model, bad)
    if not isinstance(meta.get("train_config"), dict):
        raise bad("train_config is missing")
    history = meta.get("history")
    if (not isinstance(history, dict) or not all(isinstance(history.get(k), list) for k in _HISTORY_KEYS)
            or len({len(history[k]) for k in _HISTORY_KEYS}) != 1
            or not all(_is_int(s) for s in history["step"])):
        raise bad("history must hold equally long lists " + ", ".join(_HISTORY_KEYS))
    for key in ("train_loss", "val_loss", "lr", "time", "epoch"):
        if not all(v is None or _is_number(v) for v in history[key]):
            raise bad(f"history {key} must hold numbers")
    if not _is_number(meta.get("elapsed", 0.0)):
        raise bad("elapsed must be a finite number")
    if meta.get("best_val_loss") is not None and not _is_number(meta["best_val_loss"]):
        raise bad("best_val_loss must be a finite number")
    if meta.get("best_step") is not None and not _is_int(meta["best_step"]):
        raise bad("best_step must be a non-negative integer")
    if not isinstance(meta.get("corpus", {}), dict) or not isinstance(meta.get("created", ""), str):
        raise bad("corpus or created has the wrong type")


def _check_optimizer_state(optimizer: Any, model: CharRNN, bad: Callable[[str], CharRNNError]) -> None:
    """Adam-style state: one group over all parameters; per-parameter tensors shaped like them."""
    if not isinstance(optimizer, dict):
        raise bad("optimizer state is missing")
    groups, per_param = optimizer.get("param_groups"), optimizer.get("state")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups) or not isinstance(per_param, dict):
        raise bad("optimizer state has the wrong layout")
    shapes = [tuple(p.shape) for p in model.parameters()]
    ids = [i for g in groups for i in (g.get("params") if isinstance(g.get("params"), list) else [None])]
    if not all(_is_int(i) for i in ids) or sorted(ids) != list(range(len(shapes))):
        raise bad("optimizer state does not cover the model's parameters")
    for key, entry in per_param.items():
        if not _is_int(key, 0, len(shapes)) or not isinstance(entry, dict):
            raise bad("optimizer state refers to unknown parameters")
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != shapes[key]:
                raise bad(f"optimizer {name} of parameter {key} has shape {tuple(value.shape)}, expected {shapes[key]}")
            if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value).all()):
                raise bad(f"optimizer {name} of parameter {key} is not finite")


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of writes a kill interrupted (`.NAME.*.tmp` beside the files).

    Only call this from the one process that writes the run: a live writer's file looks the same.
    """
    removed = []
    run_dir = Path(run_dir)
    for name in (BEST, LAST, META, "metrics.jsonl", "losses.png"):
        for tmp in run_dir.glob(temp_pattern(name)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


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
