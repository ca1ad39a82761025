"""Several processes, one model: data-parallel training on torch.distributed, launched by torchrun.

    torchrun --nproc_per_node 2 -m charrnn train data/shakespeare.txt

Under torchrun (WORLD_SIZE > 1) every process builds the same model, DistributedDataParallel keeps
the copies identical by averaging gradients (gloo on CPU, nccl on CUDA, one GPU per process), and:

  * `--batch-size` is the *global* number of streams. The corpus is laid out as those B contiguous
    streams exactly as in one process, and rank r trains rows [r*B/N, (r+1)*B/N): ranks never see
    the same text in a step, and N processes compute the same gradient as one process with the
    whole batch (up to float rounding, and to the random draws - dropout, state resets - which
    each rank makes from its own generator). B must be a multiple of N.
  * Only rank 0 writes checkpoints, meta.json, metrics.jsonl, plots and log lines.
  * Validation streams are split over the ranks and the losses averaged, and the ranks share one
    clock and one stop signal, so they agree on the learning rate, "improved", early stopping and
    every stop (time budget, signals): no rank waits forever for another.
  * Checkpoints hold the carried hidden state of all B streams and each rank's RNG state.

Resuming with another number of processes: the data position, optimizer, learning-rate schedule
and carried state continue exactly, because they are defined on the global batch; what changes is
the split of rows over processes (hence throughput) and the random draws of ranks that did not
exist before (fresh seeds); float rounding of the averaged gradient differs in the last bits.
Resuming with the same number continues exactly.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import CharRNNError
from .runtime import resolve_device


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise CharRNNError(f"${name} must be an integer, got {os.environ.get(name)!r}") from None


def launched_by_torchrun() -> bool:
    """True in a process that torchrun (or another launcher setting WORLD_SIZE > 1) started."""
    return _env_int("WORLD_SIZE", 1) > 1


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that prints and writes."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return _env_int("RANK", 0) == 0


def shutdown() -> None:
    """Tear the process group down (if any); call once training in this process is over."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@dataclass
class Distributed:
    """This process's place in the job. The default is the single-process job (everything a no-op)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @classmethod
    def from_env(cls, device: str = "auto") -> Distributed:
        """Join the torchrun job described by the environment, or stay a single process."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return cls._joined(device)
        if not launched_by_torchrun():
            return cls(device=resolve_device(device))
        if not dist.is_available():
            raise CharRNNError("this PyTorch build has no torch.distributed; run a single process")
        missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise CharRNNError(f"WORLD_SIZE is set but {', '.join(missing)} is not; launch with "
                               "torchrun --nproc_per_node N -m charrnn train ...")
        me = cls._placed(device, _env_int("RANK", 0), _env_int("LOCAL_RANK", 0), _env_int("WORLD_SIZE", 1))
        kwargs: dict[str, Any] = {"device_id": me.device} if me.backend == "nccl" else {}
        dist.init_process_group(me.backend, rank=me.rank, world_size=me.world_size, **kwargs)
        return me

    @classmethod
    def _joined(cls, device: str) -> Distributed:
        dist = torch.distributed
        me = cls._placed(device, dist.get_rank(), _env_int("LOCAL_RANK", dist.get_rank()), dist.get_world_size())
        me.backend = dist.get_backend()
        return me

    @classmethod
    def _placed(cls, device: str, rank: int, local_rank: int, world_size: int) -> Distributed:
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise CharRNNError(f"process {rank} wants GPU {local_rank} but this machine has "
                                   f"{torch.cuda.device_count()}; use --nproc_per_node <= the GPU count")
            resolved = torch.device("cuda", local_rank)  # one GPU per process
            torch.cuda.set_device(resolved)
            backend = "nccl"
        elif resolved.type == "cpu":
            backend = "gloo"
        else:
            raise CharRNNError(f"distributed training runs on CPU (gloo) or CUDA (nccl), not {resolved.type}")
        return cls(rank=rank, local_rank=local_rank, world_size=world_size, device=resolved, backend=backend)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ----- data ---------------------------------------------------------------------------------
    def rows(self, batch_size: int) -> slice:
        """This rank's streams of the global batch: a contiguous block of B/N rows."""
        if batch_size % self.world_size:
            raise CharRNNError(f"--batch-size {batch_size} must be a multiple of the {self.world_size} "
                               "processes (each trains batch-size / processes streams)")
        per_rank = batch_size // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def shard(self, batcher: Any) -> Any:
        """A StreamBatcher over this rank's rows only (a view: no data is copied)."""
        if not self.enabled:
            return batcher
        return type(batcher)(batcher.streams[self.rows(batcher.batch_size)], batcher.seq_len, batcher.seed)

    def local_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """The global-batch hidden state (L, B, H) -> this rank's rows (L, B/N, H)."""
        return tensor[:, self.rows(tensor.shape[1])] if self.enabled else tensor

    # ----- model --------------------------------------------------------------------------------
    def wrap(self, model: nn.Module, seed: int) -> nn.Module:
        """The module to train with: DDP around `model` (which stays the one to save and sample).

        DDP copies rank 0's initial weights to every rank. Ranks then draw dropout from their own
        seeds, so the rows of different ranks do not share dropout masks.
        """
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.rank:
            torch.manual_seed(seed + 1_000_003 * self.rank)
        return wrapped

    # ----- agreement ----------------------------------------------------------------------------
    def _tensor(self, values: list[float]) -> torch.Tensor:
        device = self.device if self.backend == "nccl" else torch.device("cpu")
        return torch.tensor(values, dtype=torch.float64, device=device)

    def mean(self, value: float) -> float:
        """The average of `value` over ranks (the global-batch loss from each rank's share)."""
        if not self.enabled:
            return value
        t = self._tensor([value])
        torch.distributed.all_reduce(t)
        return float(t[0]) / self.world_size

    def agree(self, elapsed: float, eval_cost: float, stop_signal: str | None) -> tuple[float, float, str | None]:
        """One clock and one stop signal for all ranks (the latest clock; any rank's signal).

        The clock sets the learning-rate schedule and the time budget: ranks reading their own
        clocks would step with slightly different learning rates and stop at different steps.
        """
        if not self.enabled:
            return elapsed, eval_cost, stop_signal
        code = int(signal.Signals[stop_signal]) if stop_signal else 0
        t = self._tensor([elapsed, eval_cost, float(code)])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        code = int(t[2])
        return float(t[0]), float(t[1]), (signal.Signals(code).name if code else None)

    def evaluate(self, evaluate: Callable[..., float], model: nn.Module, streams: Any, *args: Any) -> float:
        """`evaluate(model, streams, *args)` with the validation streams split over ranks.

        Rows are equally long, so the mean over all rows is the row-weighted mean of the ranks'.
        """
        if not self.enabled:
            return evaluate(model, streams, *args)
        mine = streams[self.rank :: self.world_size]
        rows = len(mine)
        local = evaluate(model, mine, *args) if rows else 0.0
        t = self._tensor([local * rows, float(rows)])
        torch.distributed.all_reduce(t)
        return float(t[0] / t[1])

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def check_same(self, value: Any, what: str) -> None:
        """Refuse to train when ranks disagree on something that must be common (corpus, run folder)."""
        values = self.gather_objects(value)
        if any(v != values[0] for v in values):
            raise CharRNNError(f"the processes disagree on the {what}: {values}")

    # ----- checkpoints --------------------------------------------------------------------------
    def gather_rows(self, hidden: Any) -> Any:
        """Each rank's carried state (L, B/N, H) -> the global batch's (L, B, H), on every rank."""
        if not self.enabled or hidden is None:
            return hidden
        if isinstance(hidden, tuple):
            return tuple(self.gather_rows(h) for h in hidden)
        parts = [torch.empty_like(hidden) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, hidden.contiguous())
        return torch.cat(parts, dim=1)

    def rank_states(self, rng_state: dict[str, Any]) -> dict[str, Any]:
        """Every rank's RNG state, for the checkpoint (nothing extra in a single process)."""
        if not self.enabled:
            return {}
        return {"rank_rng": self.gather_objects(rng_state), "world_size": self.world_size}

    def rng_state_for_me(self, train_state: dict[str, Any]) -> dict[str, Any]:
        """The RNG state this rank resumes with: its own if it was saved, rank 0's for rank 0.

        A rank that did not exist when the checkpoint was written keeps its fresh seed.
        """
        per_rank = train_state.get("rank_rng")
        if isinstance(per_rank, list) and self.rank < len(per_rank) and isinstance(per_rank[self.rank], dict):
            return per_rank[self.rank]
        return train_state.get("rng", {}) if self.rank == 0 else {}

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """For meta.json: the job's shape and each rank's parameter digest (raises if they differ)."""
        if not self.enabled:
            return {}
        h = hashlib.sha256()
        for tensor in model.state_dict().values():
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        digests = self.gather_objects(h.hexdigest())
        if len(set(digests)) != 1:
            raise CharRNNError(f"the processes' parameters diverged ({digests}); this is a bug, please report it")
        return {"distributed": {"world_size": self.world_size, "backend": self.backend, "param_sha256": digests}}
