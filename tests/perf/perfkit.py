"""Shared helpers of the performance pairs (see conftest.py)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import torch

from bioprior.registry.engine.trainer import select_device

DEVICE = select_device("auto")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def device_name() -> str:
    if DEVICE.type == "cuda":
        return torch.cuda.get_device_name(DEVICE)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@functools.cache
def matmul_rate(precision: str) -> float:
    """FLOP/s of a large matmul in ``precision`` ("bf16" or "fp32") on this device, at this
    process's thread count on a CPU: the device's practical peak, the best of five short trials
    (on a busy machine one trial can fall in a slow minute and put a side above 100% of it). A step
    that runs near it cannot be made much faster by batching."""
    import time

    n, reps = (8192, 10) if DEVICE.type == "cuda" else (2048, 2)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=DEVICE, dtype=dtype)
    for _ in range(3):
        a @ a
    sync()
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            a @ a
        sync()
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - start))
    return best


def step_flops(model, x, y) -> float:
    """Training FLOPs of one pass over ``x`` counted on a forward and backward of ten images:
    for networks whose backward is far from twice the forward (frozen stages, no gradient
    reaching the input), where ``train_flops``'s rule of thumb would overstate the work."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x[:10].float()), y[:10]).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 10 * len(x)


def train_flops(model, x) -> float:
    """Training FLOPs of one pass over ``x``: three times one measured forward per image."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(x[:1].float())
    return 3.0 * counter.get_total_flops() * len(x)


def recorder(benchmark):
    """``record(pair, role, images, flops=None, precision="fp32")`` after ``benchmark(...)``:
    fills extra_info; with ``flops``, the fraction of the device's matmul rate reached: on a GPU
    of its bf16 rate (``bf16_peak_fraction``), on a CPU of the rate in the precision the role
    trained in (``fp32_peak_fraction`` or ``bf16_peak_fraction``)."""

    def rec(
        pair: str, role: str, images: int, flops: float | None = None, precision: str = "fp32"
    ) -> None:
        info = benchmark.extra_info
        info.update(pair=pair, role=role, images=images, device=device_name())
        stats = getattr(benchmark, "stats", None)
        mean = stats.stats.mean if stats is not None else None
        if mean:
            info["images_per_s"] = images / mean
            if flops:
                precision = "bf16" if DEVICE.type == "cuda" else precision
                info[f"{precision}_peak_fraction"] = flops / mean / matmul_rate(precision)

    return rec


def interleave(
    benchmark, engine: Callable[[], Any], reference: Callable[[], Any], rounds: int, warmup: int = 1
) -> Any:
    """Time ``engine`` with pytest-benchmark and one ``reference`` run before each of its rounds
    (pedantic's setup, timed here, synchronized): both sides then share the same minutes of a
    machine whose speed drifts. A shared virtual machine's can drift 20-30% within minutes, which
    moves a ratio of two tests run one after the other as much. The reference's times go to
    ``extra_info["interleaved_reference_s"]``; ``python -m bioprior.perf`` prints the pair's
    ratio from them beside the one from the reference's own test."""
    times: list[float] = []

    def timed_reference() -> None:
        start = time.perf_counter()
        reference()
        sync()
        times.append(time.perf_counter() - start)

    result = benchmark.pedantic(
        engine, setup=timed_reference, rounds=rounds, iterations=1, warmup_rounds=warmup
    )
    benchmark.extra_info["interleaved_reference_s"] = times[-rounds:]
    return result
