"""Shared helpers of the performance pairs (see conftest.py)."""

from __future__ import annotations

import functools

import torch

from bioprior.registry.trainer import select_device

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
def bf16_matmul_rate() -> float:
    """FLOP/s of a large bf16 matmul on this GPU (the device's practical peak)."""
    a = torch.randn(8192, 8192, device=DEVICE, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    sync()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ a
    end.record()
    sync()
    return 10 * 2 * 8192**3 / (start.elapsed_time(end) / 1000)


def recorder(benchmark):
    """``record(pair, role, images, flops=None)`` after ``benchmark(...)``: fills extra_info."""

    def rec(pair: str, role: str, images: int, flops: float | None = None) -> None:
        info = benchmark.extra_info
        info.update(pair=pair, role=role, images=images, device=device_name())
        stats = getattr(benchmark, "stats", None)
        mean = stats.stats.mean if stats is not None else None
        if mean:
            info["images_per_s"] = images / mean
            if flops and DEVICE.type == "cuda":
                info["bf16_peak_fraction"] = flops / mean / bf16_matmul_rate()

    return rec
