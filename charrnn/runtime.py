"""Devices, precision and seeds: the only place that branches on hardware."""

from __future__ import annotations

import contextlib
import functools
import gc
import random
from collections.abc import Callable

import torch

from .errors import CharRNNError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicit device that is missing is an error."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CharRNNError(f"device {name!r} requested but CUDA is not available on this machine")
        try:
            device = torch.device(name)
        except RuntimeError:
            raise CharRNNError(f"unknown device {name!r}") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CharRNNError(f"device {name!r} does not exist ({torch.cuda.device_count()} GPU(s))")
        return device
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise CharRNNError("device 'mps' requested but MPS is not available on this machine")
        return torch.device("mps")
    raise CharRNNError(f"unknown device {name!r}; use auto, cpu, cuda or mps")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), where autocast pays off."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where it is fast (CUDA with bf16, CPUs with native bf16), else 'fp32'."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def derived_seed(seed: int, n: int) -> int:
    """The seed of the n-th independent draw (an epoch's offset, a step's state resets) of a run.

    Wrapped into torch's 64-bit seed range: any --seed the CLI accepts works, and seeds below
    about 1.8e13 give the same value as the plain formula (earlier runs stay reproducible).
    """
    return (seed * 1_000_003 + n) % 2**64


def seed_everything(seed: int) -> None:
    """Seed every RNG the library uses (init, dropout); the sampler uses its own generators."""
    random.seed(seed)
    torch.manual_seed(seed)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        return None


def release_free_memory() -> None:
    """Free what the process no longer uses and give it back to the operating system.

    First the reference cycles: a matplotlib figure is one (about 3.4 MiB for the loss plot), and
    CPython's full collection, which alone frees it, comes rarely once torch's hundreds of thousands
    of objects are alive. Without this, each evaluation's plot stayed resident until then: a soak
    saw +35 MiB over five evaluations. A full collection costs ~0.1 s, once per evaluation.
    Then glibc: it keeps freed blocks for reuse, and after a large block is freed it raises its
    threshold for serving big requests from the heap instead of fresh mappings, so the bursts of an
    evaluation and a checkpoint save leave the resident size creeping up over a long run. One
    `malloc_trim` after each of those bursts keeps it flat; it costs well under a millisecond.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
