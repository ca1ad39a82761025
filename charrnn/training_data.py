"""What a run trains on, prepared before the loop starts: vocabulary, training streams, validation.

Preparation is separate from the trainer so the loop only ever sees ready batches, and so a
corpus problem (unknown characters, a model too big for memory) is reported before any model exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .corpus_cache import CorpusSource, as_source
from .data import StreamBatcher, stream_rows
from .distributed import Distributed
from .errors import CharRNNError
from .vocab import Vocab


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
            vocab: Vocab | None = None, corpus: dict[str, Any] | None = None) -> TrainingData:
    """Build the vocabulary (unless given), encode the corpus and lay it out in streams."""
    source = as_source(text)
    vocab = vocab or Vocab.from_text(source.chars())
    unknown = vocab.unknown(source.chars())
    if unknown:
        raise CharRNNError(f"the corpus has characters the vocabulary lacks: {unknown[:10]}")
    if len(vocab) != model_config.vocab_size:
        model_config = ModelConfig.from_dict({**model_config.to_dict(), "vocab_size": len(vocab)})
    data = source.load(vocab, cfg.val_frac)  # compact ids; memory-mapped for CorpusFiles
    # Under torchrun each rank trains its own rows of the global batch (distributed.py).
    batcher = dist.shard(StreamBatcher.from_ids(data.train_ids, cfg.batch_size, cfg.seq_len, cfg.seed))
    return TrainingData(vocab, model_config, {**(corpus or {}), **data.info}, batcher,
                        val_streams(data.val_ids, cfg.seq_len))


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
