"""Pair "train-epoch": the engine's epoch (``train_model``: device-resident data, seeded index
permutation, channels_last, set_to_none, bf16 autocast where bf16 is the faster arithmetic: a
GPU, or a CPU with AMX) against a plain per-sample DataLoader fp32 loop, same
model and data. On GPU a CIFAR-sized ResNet-18 epoch
(50k random 32 px images) is measured too (target <= 1.0 s in bf16)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from perfkit import DEVICE, interleave, sync, train_flops
from torch.utils.data import DataLoader, TensorDataset

from bioprior import create_model
from bioprior.registry.engine.trainer import train_model
from bioprior.registry.submissions.schema import TrainingRecipe
from bioprior.registry.toolkit.data import fit_data

pytestmark = pytest.mark.perf
PRECISION = "bf16"  # the engine autocasts where bf16 is faster (trainer.bf16_is_faster), else fp32


@pytest.fixture(scope="module")
def digits():
    from bioprior.registry.hooks.loading import get_registry

    data = fit_data(get_registry(reload=True).get("dataset", "digits").build({}), 1, 16)
    return data.to(DEVICE)


def _model():
    torch.manual_seed(0)
    return create_model(
        "small_alexnet", in_channels=1, num_classes=10, input_size=16, width=0.25
    ).to(DEVICE)


RECIPE = TrainingRecipe(
    dataset={"name": "digits"}, epochs=1, batch_size=64, lr=0.01, precision=PRECISION
)


def _reference_epoch(digits):
    """One epoch of the plain loop (a model, optimizer and per-sample DataLoader of its own)."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(
        TensorDataset(digits.train_x.cpu(), digits.train_y.cpu()), batch_size=64, shuffle=True
    )

    def epoch():
        total = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(DEVICE), yb.to(DEVICE)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        sync()
        return total

    return model, epoch


@pytest.mark.benchmark(group="train-epoch-digits")
def test_engine_epoch(benchmark, record, digits):
    model = _model()

    def epoch():
        history = train_model(model, digits.train_x, digits.train_y, RECIPE, seed=0)
        sync()
        return history

    history = interleave(benchmark, epoch, _reference_epoch(digits)[1], rounds=5)
    flops = train_flops(model, digits.train_x)
    record("train-epoch", "engine", len(digits.train_x), flops, history["autocast"])
    assert history["loss"][0] > 0


@pytest.mark.benchmark(group="train-epoch-digits")
def test_dataloader_reference_epoch(benchmark, record, digits):
    model, epoch = _reference_epoch(digits)
    assert benchmark.pedantic(epoch, rounds=5, iterations=1, warmup_rounds=1) > 0
    record("train-epoch", "reference", len(digits.train_x), train_flops(model, digits.train_x))


@pytest.mark.gpu
@pytest.mark.benchmark(group="train-epoch-resnet18-cifar")
def test_resnet18_cifar_epoch_bf16(benchmark, record):
    """The GPU target: a 50k-image 32 px epoch of a CIFAR-stem ResNet-18 in bf16."""
    if DEVICE.type != "cuda":
        pytest.skip("needs a GPU")
    torch.manual_seed(0)
    model = create_model("resnet18_cifar", in_channels=3, num_classes=10, input_size=32).to(DEVICE)
    x = torch.rand(50_000, 3, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (50_000,), device=DEVICE)
    recipe = TrainingRecipe(
        dataset={"name": "cifar10"}, epochs=1, batch_size=512, lr=0.05, precision="bf16"
    )
    train_model(model, x[:2048], y[:2048], recipe, seed=0)  # warm-up (cudnn.benchmark)

    def epoch():
        train_model(model, x, y, recipe, seed=0)
        sync()

    benchmark.pedantic(epoch, rounds=3, iterations=1)
    record("resnet18-cifar-epoch", "engine", len(x), train_flops(model, x))
