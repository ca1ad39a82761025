"""What a run trains on, prepared before the loop starts: vocabulary, training streams, validation.

Preparation is separate from the trainer so the loop only ever sees ready batches, and so a
corpus problem (unknown characters, a model too big for memory) is reported before any model exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .corpus_cache import CorpusSource, as_source
from .data import StreamBatcher, sizes_that_fit, stream_rows
from .distributed import Distributed
from .errors import CharRNNError
from .vocab import Vocab

if TYPE_CHECKING:
    from .validation import ValidationFiles


@dataclass
class TrainingData:
    """A run's data: the vocabulary, the model config sized to it, this process's training streams
    and the validation streams, plus the corpus record kept in the checkpoint's metadata."""

    vocab: Vocab
    model_config: ModelConfig
    corpus: dict[str, Any]
    batcher: StreamBatcher
    val: np.ndarray


def prepare(text: str | CorpusSource, model_config: ModelConfig, cfg: TrainConfig, dist: Distributed, *,
            vocab: Vocab | None = None, corpus: dict[str, Any] | None = None,
            validation: ValidationFiles | None = None,
            log: Callable[[dict[str, Any]], None] | None = None) -> TrainingData:
    """Build the vocabulary (unless given), encode the corpus and lay it out in streams.

    With `validation` files the whole corpus is trained on and those files are the validation text.
    """
    source = as_source(text)
    vocab = vocab or Vocab.from_text(source.chars())
    unknown = vocab.unknown(source.chars())
    if unknown:
        raise CharRNNError(f"the corpus has characters the vocabulary lacks: {unknown[:10]}")
    if len(vocab) != model_config.vocab_size:
        model_config = ModelConfig.from_dict({**model_config.to_dict(), "vocab_size": len(vocab)})
    data = source.load(vocab, 0.0 if validation else cfg.val_frac)  # compact ids; memory-mapped for CorpusFiles
    val_ids = data.val_ids if validation is None else validation.encode(vocab, log or (lambda event: None))
    check_split(len(data.train_ids), len(val_ids), cfg, None if validation else getattr(source, "split_sizes", None))
    # Under torchrun each rank trains its own rows of the global batch (distributed.py).
    batcher = dist.shard(StreamBatcher.from_ids(data.train_ids, cfg.batch_size, cfg.seq_len, cfg.seed))
    return TrainingData(vocab, model_config, {**(corpus or {}), **data.info}, batcher,
                        val_streams(val_ids, cfg.seq_len))


# Validation fractions a hint may suggest when the split leaves too little on one side.
_HINT_VAL_FRACS = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5)


def check_split(n_train: int, n_val: int, cfg: TrainConfig,
                split_sizes: Callable[[float], tuple[int, int]] | None = None) -> None:
    """Refuse a split that cannot train or cannot be evaluated, naming the real cause, with a hint
    whose every suggestion trains: the sizes suggested leave room for the validation split too.

    `n_train`/`n_val` are the characters on each side of the split (one batch needs B x (T+1)
    training characters; evaluation needs 2 validation characters); `split_sizes(val_frac)` gives
    them for another fraction (default: the joined text cut once, as `data.split` does).
    """
    need = cfg.batch_size * (cfg.seq_len + 1)
    if n_train >= need and n_val >= 2:
        return
    total = n_train + n_val

    def sides(frac: float) -> tuple[int, int]:
        if split_sizes is not None:
            return split_sizes(frac)
        kept = int(total * (1.0 - frac))  # as data.split cuts the text
        return kept, total - kept

    # An unusually large --val-frac that starves training is the cause to name, not the text's length.
    blame_frac = n_train < need and cfg.val_frac > max(_HINT_VAL_FRACS)
    fracs = ([] if blame_frac else [cfg.val_frac]) + [f for f in _HINT_VAL_FRACS if f != cfg.val_frac]
    usable = [f for f in fracs if sides(f)[0] >= 2 and sides(f)[1] >= 2]
    frac = usable[0] if usable else None
    if frac is None:
        options: list[str] = []
    else:
        prefix = "" if frac == cfg.val_frac else f"--val-frac {frac:g} "
        options = [prefix + o for o in sizes_that_fit(sides(frac)[0], cfg.batch_size, cfg.seq_len)] or [prefix.strip()]
    hint = ("try " + " or ".join(options) + ("" if blame_frac else ", or a longer text")) if options else "use a longer text"
    if blame_frac:
        raise CharRNNError(f"--val-frac {cfg.val_frac:g} leaves {n_train:,} of the text's {total:,} characters "
                           f"for training, too few for one batch of {cfg.batch_size} x {cfg.seq_len + 1}; {hint}")
    if n_val < 2:
        raise CharRNNError(f"the validation split (--val-frac {cfg.val_frac:g} of {total:,} characters) holds "
                           f"{n_val} character{'s' if n_val != 1 else ''}, and evaluating needs at least 2; {hint}")
    raise CharRNNError(f"training text has {n_train:,} characters, too few for one batch of "
                       f"{cfg.batch_size} x {cfg.seq_len + 1}; {hint}")


def val_streams(val_ids: np.ndarray, seq_len: int, max_streams: int = 64) -> np.ndarray:
    """Validation laid out as contiguous streams (fewer streams = more context per character); a view."""
    n = len(val_ids)
    if n < 2:
        raise CharRNNError("validation split has fewer than 2 characters; use a longer text or a larger --val-frac")
    streams = max(1, min(max_streams, (n - 1) // max(seq_len, 1)))
    return stream_rows(val_ids, streams)


def _available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on `device`, or None where we cannot tell."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
            return (int(info["MemAvailable"].split()[0]) + int(info.get("SwapFree", "0 kB").split()[0])) * 1024
        except (OSError, KeyError, ValueError):
            return None
    return None


def check_fits_in_memory(model_config: ModelConfig, cfg: TrainConfig, device: torch.device) -> None:
    """Refuse a model that cannot fit before allocating it.

    An absurd --hidden-size would otherwise end in an allocator traceback or, worse, the OOM killer.
    Counted: fp32 weights, gradients and two Adam moments, plus the logits of one batch and their
    gradient; a lower bound, so nothing that fits is refused.
    """
    params = model_config.num_parameters()
    need = 16 * params + 8 * cfg.batch_size * cfg.seq_len * model_config.vocab_size
    available = _available_memory(device)
    if available is not None and need > available:
        raise CharRNNError(
            f"a {params / 1e6:,.0f}M-parameter model with batch {cfg.batch_size} x {cfg.seq_len} needs at least "
            f"{need / 2**30:,.1f} GiB to train, but {device.type} has {available / 2**30:,.1f} GiB free; "
            "use a smaller --hidden-size, --num-layers, --embed-dim, --batch-size or --seq-len")
