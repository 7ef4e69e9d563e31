"""Performance tracking (pytest-benchmark): the trainer's device-resident fast path against a
per-sample DataLoader epoch with the same arithmetic, in the same run. Compare with
``pytest tests/test_perf.py --benchmark-enable --benchmark-group-by=group``; the default run
executes each once as a smoke test. GPU work is synchronized inside the timed call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from bioprior import create_model
from bioprior.registry.data import fit_data
from bioprior.registry.schemas import TrainingRecipe
from bioprior.registry.trainer import select_device, train_model

DEVICE = select_device("auto")


@pytest.fixture(scope="module")
def digits():
    from bioprior.registry.plugins import get_registry

    data = fit_data(get_registry(reload=True).get("dataset", "digits").build({}), 1, 16)
    return data.to(DEVICE)


def _model():
    torch.manual_seed(0)
    return create_model(
        "small_alexnet", in_channels=1, num_classes=10, input_size=16, width=0.25
    ).to(DEVICE)


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


RECIPE = TrainingRecipe(dataset={"name": "digits"}, epochs=1, batch_size=64, lr=0.01)


@pytest.mark.benchmark(group="train-epoch-digits")
def test_fast_path_epoch(benchmark, digits):
    model = _model()

    def epoch():
        history = train_model(model, digits.train_x, digits.train_y, RECIPE, seed=0)
        _sync()
        return history

    history = benchmark(epoch)
    assert history["loss"][0] > 0


@pytest.mark.benchmark(group="train-epoch-digits")
def test_dataloader_reference_epoch(benchmark, digits):
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
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        _sync()
        return total

    assert benchmark(epoch) > 0
