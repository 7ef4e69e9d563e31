"""Pair "evaluation": the harness (``accuracy``: inference mode, large batches, seeded) against the
bare model forward over the same tensors (target: harness overhead <= 10%). On GPU the target is
>= 100k images/s for small_alexnet."""

from __future__ import annotations

import pytest
import torch
from perfkit import DEVICE, interleave, sync

from bioprior import create_model
from bioprior.registry.engine.trainer import Normalized, accuracy

pytestmark = pytest.mark.perf
N = 16384 if DEVICE.type == "cuda" else 2048


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = create_model("small_alexnet", in_channels=1, num_classes=10, input_size=16, width=0.5)
    model = Normalized(net, torch.tensor([0.5]), torch.tensor([0.25])).to(DEVICE).eval()
    x = torch.rand(N, 1, 16, 16, device=DEVICE)
    y = torch.randint(0, 10, (N,), device=DEVICE)
    return model, x, y


def _bare(model, x, y):
    """The reference: the model's forward over all of ``x`` at once, under no_grad."""

    def run():
        with torch.no_grad():
            correct = (model(x).argmax(1) == y).sum().item()
        sync()
        return correct

    return run


@pytest.mark.benchmark(group="evaluation")
def test_harness_accuracy(benchmark, record, setup):
    model, x, y = setup

    def run():
        acc = accuracy(model, x, y)
        sync()
        return acc

    assert 0 <= interleave(benchmark, run, _bare(model, x, y), rounds=5) <= 1
    record("evaluation", "engine", N)


@pytest.mark.benchmark(group="evaluation")
def test_bare_forward(benchmark, record, setup):
    assert benchmark.pedantic(_bare(*setup), rounds=5, iterations=1, warmup_rounds=1) >= 0
    record("evaluation", "reference", N)
