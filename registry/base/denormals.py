"""Subnormal floats on the CPU: flushed to zero (FTZ / DAZ) in the processes that train and
evaluate, and what each result then records.

Why: evanson's Flexible Layer (Eq. 1) weighs its two branches by sigmoids of
``sharpness * (t - f_max)`` (sharpness 50), whose tails reach 1e-28 on Fashion-MNIST's dark
background; their products with gradients fall below float32's smallest normal number
(1.18e-38), and x86 CPUs compute on such subnormal numbers in microcode. A training step of
Table 2's "standard reverse" network ran 2-3x slower than the same arithmetic without them.
Flushed, they become 0: a change below 1e-38 in any value, what GPUs' fast paths also do.

The flag is a per-thread CPU register: the scorer sets it where a process starts, before its
first parallel torch operation (with the thread count; each worker process before its first
step), and :func:`state` probes what the process's intra-op threads then do: what every CPU
result and weights file records (``denormals``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

SMALLEST_NORMAL = 1.1754943508222875e-38  # float32
FLUSHED, KEPT, PARTLY = "flushed", "kept", "partly flushed"


def flush(enabled: bool = True) -> bool:
    """Flush subnormal floats to zero on this thread (and the intra-op threads it creates from
    now on); False where the CPU cannot."""
    import torch

    return bool(torch.set_flush_denormal(enabled))


def state() -> str:
    """``"flushed"``, ``"kept"`` or ``"partly flushed"``: whether an elementwise product split
    over every intra-op thread turns subnormal inputs into zeros."""
    import torch

    per_thread = 1 << 16  # above torch's grain size: the product is split over the threads
    x = torch.full((per_thread * max(torch.get_num_threads(), 1),), 1e-40, dtype=torch.float32)
    zeros = int((x * 1.5 == 0).sum())
    return FLUSHED if zeros == x.numel() else KEPT if zeros == 0 else PARTLY


def main_thread_flushes() -> bool:
    """Whether this thread flushes (a one-element product runs on the calling thread)."""
    import torch

    return bool((torch.tensor([1e-40]) * 1.5 == 0).item())


@contextmanager
def flushed() -> Iterator[None]:
    """Flush within the block, then give the calling thread back its own setting (a process
    that runs the scorer in-process, e.g. a test suite, keeps subnormals afterwards)."""
    before = main_thread_flushes()
    flush()
    try:
        yield
    finally:
        flush(before)
