"""Typed configuration: one frozen dataclass per concern, plus named presets.

`ModelConfig` is exactly what rebuilds the network; `TrainConfig` is optimisation and bookkeeping.
Both are stored in each checkpoint as plain dicts (`to_dict`) and read back with `from_dict`, which
rejects unknown keys. Defaults here are the single source of truth for the CLI's `--help`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import CharRNNError

MODEL_TYPES = ("lstm", "gru", "rnn")
MAX_VOCAB_SIZE = 1 << 20  # about a million characters: far more than any real text's alphabet
# Sane bounds for the optimiser and the run's counters: beyond them a value is a typo, not a choice.
# AdamW moves every weight by up to about lr per step, so lr > 1 only destroys the model (1e39 even
# crashed inside the optimiser); weight decay above 1 shrinks the weights past zero at lr 1.
MAX_LR = 1.0
MAX_WEIGHT_DECAY = 1.0
MAX_GRAD_CLIP = 1e6
MAX_STEPS = 10**9  # a billion steps: years on any machine charrnn runs on
MAX_DURATION = 365 * 24 * 3600.0

T = TypeVar("T")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise CharRNNError(message)


def _from_dict(cls: type[T], data: Any, *, what: str) -> T:
    if not isinstance(data, dict):
        raise CharRNNError(f"{what} must be a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names.keys())
    if unknown:
        raise CharRNNError(f"{what} has unknown key(s): {', '.join(map(str, unknown))}")
    clean = {}
    for key, value in data.items():
        default = getattr(cls, key, None)
        # JSON has one number type; restore floats/ints where the default says which.
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        clean[key] = value
    try:
        return cls(**clean)
    except TypeError as exc:
        raise CharRNNError(f"{what} is invalid: {exc}") from None


@dataclass(frozen=True)
class ModelConfig:
    """Architecture: embedding -> recurrent core -> linear head.

    The defaults are the `quick` preset's model, what `charrnn train` picks on a CPU by default.
    """

    vocab_size: int = 65
    model: str = "lstm"  # lstm | gru | rnn
    embed_dim: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.1  # between recurrent layers and before the head
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights while training (AWD-LSTM)
    tie_weights: bool = False  # share the embedding with the head (needs embed_dim == hidden_size)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_dim", "hidden_size", "num_layers"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                   f"{name} must be a positive integer, got {value!r}")
        _check(self.vocab_size <= MAX_VOCAB_SIZE,
               f"vocab_size {self.vocab_size} is over the model limit of {MAX_VOCAB_SIZE}")
        _check(self.hidden_size <= 65536 and self.embed_dim <= 65536 and self.num_layers <= 64,
               "embed_dim/hidden_size must be at most 65536 and num_layers at most 64")
        _check(self.model in MODEL_TYPES,
               f"model must be one of {', '.join(MODEL_TYPES)}, got {self.model!r}")
        _check(isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
               f"dropout must be in [0, 1), got {self.dropout!r}")
        _check(isinstance(self.weight_drop, (int, float)) and 0.0 <= self.weight_drop < 1.0,
               f"weight_drop must be in [0, 1), got {self.weight_drop!r}")
        _check(isinstance(self.tie_weights, bool), "tie_weights must be true or false")
        _check(not self.tie_weights or self.embed_dim == self.hidden_size,
               "tie_weights needs embed_dim == hidden_size "
               f"(got {self.embed_dim} and {self.hidden_size})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        return _from_dict(cls, data, what="model_config")

    def num_parameters(self) -> int:
        gates = {"lstm": 4, "gru": 3, "rnn": 1}[self.model]
        h = self.hidden_size
        total = self.vocab_size * self.embed_dim
        for layer in range(self.num_layers):
            inp = self.embed_dim if layer == 0 else h
            total += gates * h * (inp + h + 2)
        total += self.vocab_size * (0 if self.tie_weights else h) + self.vocab_size
        return total


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping for one training run.

    The defaults are the `quick` preset's, what `charrnn train` picks on a CPU by default (a
    2-minute budget); `PRESETS` holds the others.
    """

    batch_size: int = 32
    seq_len: int = 100
    lr: float = 3e-3
    lr_schedule: str = "cosine"  # cosine | constant
    min_lr_frac: float = 0.1  # cosine decays to lr * min_lr_frac
    warmup_steps: int = 0  # Adam at 2e-3 is stable on these LSTMs from step 0; warm-up only cost loss
    decay_steps: int | None = None  # horizon of the cosine; default: max_steps or the time budget
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    ema: float = 0.0  # decay of a moving average of the weights, which is evaluated and saved (0: off)
    max_steps: int | None = None
    time_budget: float | None = 120.0  # seconds of wall clock, evaluation included
    eval_interval: int = 200  # steps between full validation passes
    log_interval: int = 10
    val_frac: float = 0.1
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto | fp32 | bf16 (autocast)
    stateful: bool = True  # carry the hidden state across consecutive windows (truncated BPTT)
    state_reset_prob: float = 0.1  # chance per stream and window of restarting from the zero state
    patience: int | None = None  # evaluations without improvement before stopping early
    sample_interval: int = 0  # steps between short samples in the log (0: only at evaluations)
    sample_length: int = 200

    def __post_init__(self) -> None:
        for name in ("batch_size", "seq_len", "eval_interval", "log_interval"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                   f"{name} must be a positive integer, got {value!r}")
        _check(self.batch_size <= 1 << 16 and self.seq_len <= 1 << 20,
               "batch_size must be at most 65536 and seq_len at most 1048576")
        for name in ("eval_interval", "log_interval", "max_steps", "warmup_steps", "decay_steps",
                     "sample_interval", "patience"):
            value = getattr(self, name)
            _check(not isinstance(value, int) or value <= MAX_STEPS,
                   f"{name} must be at most {MAX_STEPS:,} (a billion steps), got {value!r}")
        _check(isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and 0 < self.lr <= MAX_LR,
               f"lr must be a number in (0, {MAX_LR:g}], got {self.lr!r}")
        _check(self.lr_schedule in ("cosine", "constant"),
               f"lr_schedule must be cosine or constant, got {self.lr_schedule!r}")
        _check(0.0 <= self.min_lr_frac <= 1.0, f"min_lr_frac must be in [0, 1], got {self.min_lr_frac!r}")
        _check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0,
               f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        _check(self.decay_steps is None or (isinstance(self.decay_steps, int) and self.decay_steps >= 1),
               f"decay_steps must be a positive integer, got {self.decay_steps!r}")
        _check(isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
               and 0 <= self.weight_decay <= MAX_WEIGHT_DECAY,
               f"weight_decay must be a finite number in [0, {MAX_WEIGHT_DECAY:g}], got {self.weight_decay!r}")
        _check(isinstance(self.ema, (int, float)) and 0.0 <= self.ema < 1.0, f"ema must be in [0, 1), got {self.ema!r}")
        _check(isinstance(self.grad_clip, (int, float)) and 0 < self.grad_clip <= MAX_GRAD_CLIP,
               f"grad_clip must be in (0, {MAX_GRAD_CLIP:g}], got {self.grad_clip!r}")
        _check(self.max_steps is None or (isinstance(self.max_steps, int) and self.max_steps >= 1),
               f"max_steps must be a positive integer, got {self.max_steps!r}")
        _check(self.time_budget is None or (math.isfinite(self.time_budget) and 0 < self.time_budget <= MAX_DURATION),
               f"time_budget must be positive and at most a year, got {self.time_budget!r}")
        _check(self.max_steps is not None or self.time_budget is not None,
               "give a step limit or a time budget, or training never ends")
        _check(0.0 < self.val_frac < 1.0, f"val_frac must be in (0, 1), got {self.val_frac!r}")
        _check(isinstance(self.seed, int) and 0 <= self.seed < 2**63, f"seed must be a non-negative integer, got {self.seed!r}")
        _check(isinstance(self.device, str) and (self.device.lower() in ("auto", "cpu", "cuda", "mps")
                                                 or self.device.lower().startswith("cuda:")),
               f"device must be auto, cpu, cuda or mps, got {self.device!r}")
        _check(self.precision in ("auto", "fp32", "bf16"),
               f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        _check(isinstance(self.state_reset_prob, (int, float)) and 0.0 <= self.state_reset_prob <= 1.0,
               f"state_reset_prob must be in [0, 1], got {self.state_reset_prob!r}")
        _check(self.patience is None or (isinstance(self.patience, int) and self.patience >= 1),
               f"patience must be a positive integer, got {self.patience!r}")
        _check(isinstance(self.sample_interval, int) and self.sample_interval >= 0,
               f"sample_interval must be >= 0, got {self.sample_interval!r}")
        _check(isinstance(self.sample_length, int) and self.sample_length >= 0,
               f"sample_length must be >= 0, got {self.sample_length!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        return _from_dict(cls, data, what="train_config")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# Named configurations; every CLI flag still overrides them. Measured in BENCHMARKS.md.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # ~2 minutes on a 2-core CPU: small enough to learn words and speaker names quickly.
    "quick": {
        "model": {"embed_dim": 64, "hidden_size": 256, "num_layers": 2, "dropout": 0.1},
        "train": {"time_budget": 120.0, "batch_size": 32, "seq_len": 100, "lr": 3e-3,
                  "eval_interval": 200},
    },
    # The 10-minute CPU recipe (bf16 autocast where the CPU has it, cosine decay over the budget).
    # Ten minutes on two cores is about ten epochs: the model is still learning fast when the
    # clock stops, so a high learning rate and light dropout win (BENCHMARKS.md, "Training quality").
    "cpu10": {
        "model": {"embed_dim": 64, "hidden_size": 512, "num_layers": 2, "dropout": 0.15},
        "train": {"time_budget": 600.0, "batch_size": 64, "seq_len": 100, "lr": 4e-3,
                  "eval_interval": 250},
    },
    # Thirty minutes is ~17 epochs of a 2x768 model, which plain dropout cannot keep from overfitting
    # after ~20 minutes; DropConnect on the recurrent weights and a moving average of the weights do.
    "cpu30": {
        "model": {"embed_dim": 64, "hidden_size": 768, "num_layers": 2, "dropout": 0.3, "weight_drop": 0.3},
        "train": {"time_budget": 1800.0, "batch_size": 64, "seq_len": 100, "lr": 3e-3, "ema": 0.999,
                  "eval_interval": 250, "patience": 6},
    },
    "gpu": {
        "model": {"embed_dim": 128, "hidden_size": 1024, "num_layers": 3, "dropout": 0.35},
        "train": {"time_budget": 600.0, "batch_size": 128, "seq_len": 128, "lr": 2e-3,
                  "eval_interval": 250, "patience": 8},
    },
}


# What each preset normally reaches in its budget on tiny Shakespeare, on an idle 2-core CPU
# (BENCHMARKS.md, "Training quality"): best validation loss (nats/char) and training chars/s. A run
# far above that loss is undertrained, and one far below that speed shared its CPU.
PRESET_REFERENCE: dict[str, dict[str, float]] = {
    "quick": {"val_loss": 1.55, "chars_per_sec": 46e3},
    "cpu10": {"val_loss": 1.42, "chars_per_sec": 21e3},
    "cpu30": {"val_loss": 1.43, "chars_per_sec": 8e3},
}


def preset_of_model(model_config: ModelConfig) -> str | None:
    """The preset whose model this is (vocabulary aside), or None for a model of one's own."""
    mine = {k: v for k, v in model_config.to_dict().items() if k != "vocab_size"}
    for name, preset in PRESETS.items():
        if {**mine, **preset["model"]} == mine and all(mine[k] == getattr(ModelConfig, k) for k in mine
                                                       if k not in preset["model"]):
            return name
    return None


def preset_for(device_type: str, time_budget: float | None) -> str:
    """The preset `--preset auto` picks: the GPU one on CUDA, else by the CPU time budget."""
    if device_type == "cuda":
        return "gpu"
    if time_budget is None or time_budget <= 300:
        return "quick"
    if time_budget <= 1200:
        return "cpu10"
    return "cpu30"


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


def parse_duration(text: str) -> float:
    """'10m', '90s', '1h30m', '2.5m' or a bare number of minutes -> seconds."""
    text = str(text).strip().lower()
    try:
        value = float(text) * 60.0
    except ValueError:
        match = _DURATION.match(text)
        if not text or not match or not any(match.groups()):
            raise CharRNNError(f"cannot read duration {text!r}; use e.g. 90s, 10m, 1h30m") from None
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        value = h * 3600 + m * 60 + s
    if not math.isfinite(value) or value <= 0:
        raise CharRNNError(f"duration must be positive and finite, got {text!r}")
    if value > MAX_DURATION:
        raise CharRNNError(f"duration {text!r} is absurdly long (at most 365 days)")
    return value
