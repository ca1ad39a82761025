"""Training configuration files (TOML): read, checked, resolved, written.

A config file holds any `charrnn train` option as a flat key named like the option
(`hidden_size = 512` for `--hidden-size 512`), plus `corpus` (a path or a list of paths, what
TEXT... gives on the command line). Precedence: preset < file < options given on the command line.
Every run folder keeps its fully resolved configuration as `config.toml`, so
`charrnn train --config checkpoints/RUN/config.toml` repeats the run.

Read with `tomllib` (the standard library from Python 3.11; `tomli` before), written with
`tomli-w`: TOML's own libraries, so what is written reads back exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import typing
from pathlib import Path
from typing import Any

from .config import ModelConfig, TrainConfig, parse_duration
from .errors import CharRNNError

CONFIG_FILE = "config.toml"  # in every run folder

# The options that are not model or training hyperparameters: how the corpus is read, where things go.
# (name -> (the types a value may have, what to call them in a message))
DATA_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "corpus": ((str, list), "a path or a list of paths"),
    "preset": ((str,), "a preset name"),
    "encoding": ((str,), "a text encoding name"),
    "separator": ((str,), "a string"),
    "val_split": ((str,), '"per-file" or "end"'),
    "val_file": ((str, list), "a path or a list of paths"),
    "val_unknown": ((str,), '"error" or "skip"'),
    "cache_dir": ((str,), "a path"),
    "out": ((str,), "a path"),
    "init_from": ((str,), "a path"),
    "tensorboard": ((bool, str), "true, false or a folder"),
}
_LIST_KEYS = ("corpus", "val_file")
_MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size")
_TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
KNOWN_KEYS = (*DATA_KEYS, *_MODEL_KEYS, *_TRAIN_KEYS)
# Written to a run folder's config.toml only where they would not stop it repeating the run
# (`out` would name the folder that already holds it).
NOT_SAVED = ("out",)


def _toml_reader() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def _field_types() -> dict[str, Any]:
    hints = {**typing.get_type_hints(ModelConfig), **typing.get_type_hints(TrainConfig)}
    return {k: hints[k] for k in (*_MODEL_KEYS, *_TRAIN_KEYS)}


def _check_type(key: str, value: Any, where: str) -> Any:
    """The value as the configuration holds it, or a one-line error naming the key and the file."""
    if isinstance(value, dict):
        raise CharRNNError(f"{where}: [{key}] is a section, but the keys are flat (hidden_size = 512, no [sections])")
    if key in DATA_KEYS:
        types, what = DATA_KEYS[key]
        ok = isinstance(value, types) and not (isinstance(value, list) and not all(isinstance(v, str) for v in value))
        if key in _LIST_KEYS and value == []:
            ok = False
        if not ok:
            raise CharRNNError(f"{where}: {key} must be {what}, got {value!r}")
        return [value] if key in _LIST_KEYS and isinstance(value, str) else value
    hint = _field_types()[key]
    allowed = set(typing.get_args(hint)) or {hint}
    if key == "time_budget" and isinstance(value, str):  # "10m", as on the command line
        try:
            return parse_duration(value)
        except CharRNNError as exc:
            raise CharRNNError(f"{where}: time_budget: {exc}") from None
    if bool in allowed:
        if isinstance(value, bool):
            return value
        raise CharRNNError(f"{where}: {key} must be true or false, got {value!r}")
    if isinstance(value, bool):
        pass  # never a number, though Python says it is an int
    elif int in allowed and isinstance(value, int):
        return value
    elif float in allowed and isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    elif str in allowed and isinstance(value, str):
        return value
    what = "an integer" if int in allowed else "a number" if float in allowed else "a string"
    raise CharRNNError(f"{where}: {key} must be {what}, got {value!r}")


def check(values: Any, where: str) -> dict[str, Any]:
    """Known keys with values of the right type (ranges are checked by the configs themselves)."""
    if not isinstance(values, dict):
        raise CharRNNError(f"{where}: a configuration is a table of keys")
    out = {}
    for key, value in values.items():
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; known keys: {', '.join(KNOWN_KEYS)}"
            if isinstance(value, dict):
                hint = "; the keys are flat (hidden_size = 512, no [sections])"
            raise CharRNNError(f"{where}: unknown key {key!r}{hint}")
        out[key] = _check_type(key, value, where)
    return out


def read(path: str | os.PathLike) -> dict[str, Any]:
    """A config file's keys, checked; paths in it are as written (relative ones are to the current folder)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CharRNNError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise CharRNNError(f"config file {path}: cannot read ({exc.strerror or exc})") from None
    tomllib = _toml_reader()
    try:
        values = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CharRNNError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise CharRNNError(f"config file {path} is not valid TOML: {exc}") from None
    return check(values, f"config file {path}")


def resolved(model_config: ModelConfig, train_config: TrainConfig, data: dict[str, Any]) -> dict[str, Any]:
    """The full configuration as plain data, in the order a reader expects: data, model, training.

    Values that are None (no limit, no patience) are left out: TOML has no null, and a missing
    key means the same. A fine-tuning run (`init_from`) keeps its source's architecture, so only the
    model's regularisation is recorded.
    """
    model = {k: v for k, v in model_config.to_dict().items() if k != "vocab_size"}
    if data.get("init_from") is not None:
        model = {k: v for k, v in model.items() if k in ("dropout", "weight_drop")}
    values = {**{k: v for k, v in data.items() if k in DATA_KEYS}, **model, **train_config.to_dict()}
    return {k: v for k, v in values.items() if v is not None}


def dumps(values: dict[str, Any]) -> str:
    """TOML text of a configuration (check() reads it back as the same values)."""
    import tomli_w

    header = "# charrnn train configuration: charrnn train --config THIS_FILE repeats it; command-line options override it\n"
    return header + tomli_w.dumps(values)


def write(run_dir: str | os.PathLike, values: dict[str, Any]) -> Path:
    """The run folder's config.toml, written atomically."""
    from .checkpoint import atomic_write  # the project's one atomic write

    path = Path(run_dir) / CONFIG_FILE
    text = dumps({k: v for k, v in values.items() if k not in NOT_SAVED})
    atomic_write(path, lambda f: f.write(text), mode="w")
    return path


def escape_separator(separator: str) -> str:
    """The command-line spelling of a separator (corpus_cache.parse_separator reads it back)."""
    table = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}
    return "".join(table.get(c, c) for c in separator)
