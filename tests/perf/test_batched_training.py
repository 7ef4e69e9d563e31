"""Pair "batched-K": K trainings as one batched model (registry.batched) against the same K
trained one after another; K = 8 on CPU, 16 on GPU; small_alexnet and small_inception at
reduced width on digits (one epoch each), both sides in the engine's precision (bf16 autocast where
bf16 is the faster arithmetic, as in the train-epoch pair; fp32 elsewhere)."""

from __future__ import annotations

import pytest
from perfkit import DEVICE, interleave, sync, train_flops

from bioprior.registry.engine.batched import train_batched
from bioprior.registry.engine.trainer import Normalized, train_model, uses_bf16
from bioprior.registry.submissions.schema import TrainingRecipe
from bioprior.registry.toolkit.data import fit_data

pytestmark = pytest.mark.perf
K = 16 if DEVICE.type == "cuda" else 8
RECIPE = TrainingRecipe(
    dataset={"name": "digits"}, epochs=1, batch_size=64, lr=0.01, precision="bf16"
)
PRECISION = "bf16" if uses_bf16(RECIPE, DEVICE) else "fp32"  # what both sides train in
MODELS = {
    "small_alexnet": {"width": 0.1, "local_response_norm": False},
    "small_inception": {"width": 0.1},
}


@pytest.fixture(scope="module")
def digits():
    from bioprior.registry.hooks.loading import get_registry

    data = fit_data(get_registry(reload=True).get("dataset", "digits").build({}), 1, 16)
    return data.to(DEVICE)


def _members(name, data):
    import torch

    from bioprior import create_model

    out = []
    for seed in range(K):
        torch.manual_seed(seed)
        net = create_model(name, in_channels=1, num_classes=10, input_size=16, **MODELS[name])
        mean, std = data.channel_stats()
        out.append(Normalized(net, mean, std).to(DEVICE))
    return out


def _in_turn(modules, data):
    """The reference: the K members trained one after another."""

    def run():
        for seed, m in enumerate(modules):
            train_model(m, data.train_x, data.train_y, RECIPE, seed)
        sync()

    return run


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.benchmark(group="batched-training")
def test_batched_members(benchmark, record, digits, name):
    modules = _members(name, digits)

    def run():
        train_batched(
            modules, [digits.train_x] * K, [digits.train_y] * K, [RECIPE] * K, list(range(K))
        )
        sync()

    interleave(benchmark, run, _in_turn(_members(name, digits), digits), rounds=3)
    flops = K * train_flops(modules[0], digits.train_x)
    record(f"batched-{name}-K{K}", "engine", K * len(digits.train_x), flops, PRECISION)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.benchmark(group="batched-training")
def test_sequential_members(benchmark, record, digits, name):
    modules = _members(name, digits)
    benchmark.pedantic(_in_turn(modules, digits), rounds=3, iterations=1, warmup_rounds=1)
    flops = K * train_flops(modules[0], digits.train_x)
    record(f"batched-{name}-K{K}", "reference", K * len(digits.train_x), flops, PRECISION)
