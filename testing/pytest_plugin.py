"""The pytest plugin (entry point ``pytest11``): fixtures for plugin authors.

- ``bioprior_registry``: the registry loaded from installed entry points (fresh per test);
- ``plugin_forward_benchmark(model, input_shape, ...)``: times a model's forward pass with
  pytest-benchmark and records images/s in ``extra_info``;
- ``plugin_train_step_benchmark(model, input_shape, num_classes, ...)``: the same for one SGD
  training step (forward, cross-entropy, backward, update).

Track a plugin's speed with ``pytest --benchmark-enable --benchmark-autosave`` and compare
runs with ``--benchmark-compare``. Loading this plugin imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bioprior import plugin


@pytest.fixture
def bioprior_registry():
    from bioprior.registry.hooks.loading import set_registry  # lazy: core internals (pydantic)

    registry = plugin.get_registry(reload=True)
    yield registry
    set_registry(None)


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(benchmark, run: Callable[[], Any], batch: int, rounds: int, label: str):
    result = benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    stats = getattr(benchmark, "stats", None)
    mean = getattr(getattr(stats, "stats", None), "mean", None) if stats else None
    if mean:
        benchmark.extra_info[f"{label}_images_per_s"] = batch / mean
    benchmark.extra_info["batch"] = batch
    return result


@pytest.fixture
def plugin_forward_benchmark(benchmark):
    """``plugin_forward_benchmark(model, (batch, C, H, W), device="cpu", rounds=5)``: the
    model's eval-mode forward, GPU synchronized inside the timed call; returns the output."""

    def measure(model, input_shape, device: str = "cpu", rounds: int = 5):
        import torch

        dev = torch.device(device)
        model = model.to(dev).eval()
        x = torch.rand(*input_shape, generator=torch.Generator().manual_seed(0)).to(dev)

        def run():
            with torch.no_grad():
                out = model(x)
            _synchronize(dev)
            return out

        return _timed(benchmark, run, input_shape[0], rounds, "forward")

    return measure


@pytest.fixture
def plugin_train_step_benchmark(benchmark):
    """``plugin_train_step_benchmark(model, (batch, C, H, W), num_classes, device="cpu",
    rounds=5)``: one SGD step (forward, cross-entropy, backward, update); returns the loss."""

    def measure(model, input_shape, num_classes: int, device: str = "cpu", rounds: int = 5):
        import torch
        import torch.nn.functional as F

        dev = torch.device(device)
        model = model.to(dev).train()
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(*input_shape, generator=gen).to(dev)
        y = torch.randint(0, num_classes, (input_shape[0],), generator=gen).to(dev)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

        def run():
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            _synchronize(dev)
            return float(loss)

        return _timed(benchmark, run, input_shape[0], rounds, "train_step")

    return measure
