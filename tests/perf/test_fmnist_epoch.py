"""Pairs on the real Fashion-MNIST (evanson Table 2's data and network, skipped where Debian's
``dataset-fashion-mnist`` or a data root does not provide it):

* "fmnist-epoch": one epoch of the Table 2 network (``flexible_small_net`` with the
  ``flexible_layer`` constraint at threshold ``conv``, the paper's baseline) on the 60,000 training
  images, the engine (``train_model``) against a plain PyTorch loop written from the paper's
  supplement (Conv2d(1, 12, 5), Linear(6912, 120), Linear(120, 60), Linear(60, 10) with ReLU;
  normalized float tensors in memory, ``randperm`` batches of 100, SGD lr 0.001, momentum 0.9,
  weight decay 0.006), both fp32, each with its share of the fp32 matmul rate.
* "fmnist-epoch-learned": the same epoch with the Flexible Layer's learned thresholds (Table 2's
  "standard" rows), the engine against itself with the max-pooling branch through
  ``max_pool2d`` (what the layer ran before its shifted-slice pooling).
* "fmnist-hmax": ten training steps (1,000 images) of the Fig. 4A baseline HMAX at 28 px, the
  engine (S2 band by band, small C1 maps slid over the prototypes: ``hmax.nn.correlate``)
  against the same steps through ``F.conv2d`` with the bands zero-padded into one pass (what S2
  ran before).
* "fmnist-batched-K": K = 10 seeds of the Table 2 network as one batched model against the same
  ten trained one after another, on the first 12,000 training images (the per-step arithmetic of
  the full set; a tenth of its epochs' time)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from perfkit import DEVICE, interleave, step_flops, sync, train_flops
from torch import nn

from bioprior.registry.engine.batched import train_batched
from bioprior.registry.engine.trainer import Normalized, train_model
from bioprior.registry.submissions.schema import TrainingRecipe

pytestmark = pytest.mark.perf
K = 10
RECIPE = TrainingRecipe(
    dataset={"name": "fashion_mnist"},
    epochs=1,
    batch_size=100,
    optimizer="sgd",
    lr=0.001,
    momentum=0.9,
    weight_decay=0.006,
    schedule={"name": "step", "step_size": 20, "gamma": 0.7},
)


@pytest.fixture(scope="module")
def fmnist():
    from bioprior.registry.hooks.loading import get_registry
    from bioprior.registry.toolkit.data import DataUnavailable

    try:
        data = get_registry(reload=True).get("dataset", "fashion_mnist").build({})
    except DataUnavailable as exc:
        pytest.skip(
            f"real Fashion-MNIST unavailable ({exc}): apt-get install dataset-fashion-mnist"
        )
    return data.to(DEVICE)


def _table2_net(seed: int, data, threshold: str = "conv") -> nn.Module:
    """The engine's model of a Table 2 baseline training (as the scorer builds it)."""
    from bioprior.registry.contracts.constraint import InputGeometry, apply_constraint
    from bioprior.registry.hooks.loading import get_registry

    registry = get_registry()
    model, constraint = (
        registry.get("model", "flexible_small_net"),
        registry.get("constraint", "flexible_layer"),
    )
    torch.manual_seed(seed)
    net = model.build(model.params.model_validate({}))
    layer = constraint.build(constraint.params.model_validate({"threshold": threshold}))
    geometry = InputGeometry.of("flexible_small_net", {"in_channels": 1, "input_size": 28})
    net = apply_constraint(layer, net, geometry)
    mean, std = data.channel_stats()
    return Normalized(net, mean, std).to(DEVICE)


def _plain_epoch(data):
    """One epoch of the plain loop: the paper's network, its own float tensors and optimizer."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 12, 5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6912, 120),
        nn.ReLU(),
        nn.Linear(120, 60),
        nn.ReLU(),
        nn.Linear(60, 10),
    ).to(DEVICE)
    x = data.train_x.float() / 255.0
    x = (x - x.mean()) / x.std()
    y = data.train_y
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9, weight_decay=0.006)

    def epoch():
        total = torch.zeros((), device=DEVICE)
        for idx in torch.randperm(len(x), device=DEVICE).split(100):
            loss = F.cross_entropy(net(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach()
        sync()
        return total.item()

    return net, x, epoch


@pytest.mark.benchmark(group="fmnist-epoch")
def test_engine_fmnist_epoch(benchmark, record, fmnist):
    model = _table2_net(0, fmnist)

    def epoch():
        history = train_model(model, fmnist.train_x, fmnist.train_y, RECIPE, seed=0)
        sync()
        return history

    history = interleave(benchmark, epoch, _plain_epoch(fmnist)[2], rounds=3)
    flops = train_flops(model, fmnist.train_x)
    record("fmnist-epoch", "engine", len(fmnist.train_x), flops, history["autocast"])
    assert 0 < history["loss"][0] < 2.3  # it learned (chance: ln 10 = 2.30)


@pytest.mark.benchmark(group="fmnist-epoch")
def test_plain_fmnist_epoch(benchmark, record, fmnist):
    net, x, epoch = _plain_epoch(fmnist)
    assert benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=1) > 0
    record("fmnist-epoch", "reference", len(x), train_flops(net, x))


def _learned_epoch(data, pooling: str):
    from bioprior.plugins.flexible_layer import nn as flexible

    model, shiftable = _table2_net(0, data, "learned"), flexible._shiftable

    def epoch():
        if pooling == "max_pool2d":
            flexible._shiftable = lambda pool: False
        try:
            history = train_model(model, data.train_x, data.train_y, RECIPE, seed=0)
        finally:
            flexible._shiftable = shiftable
        sync()
        return history

    return model, epoch


@pytest.mark.benchmark(group="fmnist-epoch-learned")
def test_engine_fmnist_epoch_learned(benchmark, record, fmnist):
    model, epoch = _learned_epoch(fmnist, "shifted")
    history = interleave(benchmark, epoch, _learned_epoch(fmnist, "max_pool2d")[1], rounds=3)
    record(
        "fmnist-epoch-learned", "engine", len(fmnist.train_x), train_flops(model, fmnist.train_x)
    )
    assert 0 < history["loss"][0] < 2.3


@pytest.mark.benchmark(group="fmnist-epoch-learned")
def test_max_pool2d_fmnist_epoch_learned(benchmark, record, fmnist):
    model, epoch = _learned_epoch(fmnist, "max_pool2d")
    benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=1)
    record(
        "fmnist-epoch-learned", "reference", len(fmnist.train_x), train_flops(model, fmnist.train_x)
    )


def _hmax_steps(data, s2: str):
    """Ten steps of the baseline HMAX (Fig. 4A) as the scorer trains it, from the same start
    each time (the model is built in the call, a few milliseconds); ``s2="one pass"``: S2
    through ``F.conv2d`` on the bands zero-padded to the largest."""
    from bioprior import create_model
    from bioprior.plugins.hmax import nn as hmax

    mean, std = data.channel_stats()
    x, y = _subset(data, 1_000)
    correlate, forward = hmax.correlate, hmax.S2.forward

    def build():
        torch.manual_seed(0)
        return Normalized(create_model("hmax", variant="baseline"), mean, std).to(DEVICE)

    def steps():
        model = build()
        if s2 == "one pass":
            hmax.correlate = lambda x, w, p: F.conv2d(x, w, None, 1, p)
            hmax.S2.forward = hmax.S2.one_pass  # (the baseline has no units)
        try:
            history = train_model(model, x, y, RECIPE, seed=0)
        finally:
            hmax.correlate, hmax.S2.forward = correlate, forward
        sync()
        return history

    return build(), x, y, steps


@pytest.mark.benchmark(group="fmnist-hmax")
def test_engine_fmnist_hmax(benchmark, record, fmnist):
    model, x, y, steps = _hmax_steps(fmnist, "engine")
    one_pass = _hmax_steps(fmnist, "one pass")[3]
    reference: list[dict] = []
    history = interleave(benchmark, steps, lambda: reference.append(one_pass()), rounds=2)
    record("fmnist-hmax", "engine", len(x), step_flops(model, x, y))
    # the same ten steps from the same start: the same losses up to float rounding
    assert history["loss"] == pytest.approx(reference[-1]["loss"], rel=1e-4)


@pytest.mark.benchmark(group="fmnist-hmax")
def test_one_pass_fmnist_hmax(benchmark, record, fmnist):
    model, x, y, steps = _hmax_steps(fmnist, "one pass")
    benchmark.pedantic(steps, rounds=2, iterations=1, warmup_rounds=1)
    record("fmnist-hmax", "reference", len(x), step_flops(model, x, y))  # the engine's count


def _subset(data, n: int = 12_000):
    return data.train_x[:n], data.train_y[:n]


@pytest.mark.benchmark(group="fmnist-batched-K")
def test_batched_fmnist_members(benchmark, record, fmnist):
    x, y = _subset(fmnist)
    members = [_table2_net(seed, fmnist) for seed in range(K)]

    def in_turn():
        for seed, m in enumerate([_table2_net(s, fmnist) for s in range(K)]):
            train_model(m, x, y, RECIPE, seed)
        sync()

    def batched():
        histories = train_batched(members, [x] * K, [y] * K, [RECIPE] * K, list(range(K)))
        sync()
        return histories

    histories = interleave(benchmark, batched, in_turn, rounds=2)
    record("fmnist-batched-K", "engine", K * len(x), K * train_flops(members[0], x))
    assert all(h["batched_members"] == K for h in histories)


@pytest.mark.benchmark(group="fmnist-batched-K")
def test_sequential_fmnist_members(benchmark, record, fmnist):
    x, y = _subset(fmnist)

    def in_turn():
        for seed in range(K):
            train_model(_table2_net(seed, fmnist), x, y, RECIPE, seed)
        sync()

    benchmark.pedantic(in_turn, rounds=2, iterations=1, warmup_rounds=0)
    record("fmnist-batched-K", "reference", K * len(x), K * train_flops(_table2_net(0, fmnist), x))


SWEEP = {
    "name": "perf-fmnist-sweep",
    "model": {"name": "flexible_small_net"},
    "constraints": [{"name": "flexible_layer", "params": {"threshold": "conv"}}],
    "training": {
        "dataset": "fashion_mnist",
        "epochs": 3,
        "batch_size": 100,
        "optimizer": "sgd",
        "lr": 0.001,
        "momentum": 0.9,
        "weight_decay": 0.006,
    },
    "seeds": [0, 1],
    "benchmarks": [
        {
            "name": "adversarial",
            "params": {
                "images": 500,
                "curves": {"fgsm": {"attack": {"name": "fgsm"}, "epsilons": [0.0, 0.1]}},
                "score_curve": "fgsm",
                "score_epsilon": 0.1,
                "transfer": False,
                "minimal_images": 0,
            },
        }
    ],
}


@pytest.mark.skipif(DEVICE.type != "cpu", reason="CPU workers: a GPU runs one step at a time")
@pytest.mark.benchmark(group="fmnist-sweep")
def test_scorer_fmnist_sweep(benchmark, record, fmnist, tmp_path):
    """Pair "fmnist-sweep": two Table 2 trainings (seeds 0 and 1, three epochs each on the 60,000
    images) scored by ``bioprior score --threads 2`` as the scorer chooses to run them (two
    one-thread CPU workers), start-up, planning, data loading and a small evaluation included,
    against the plain loop's three epochs twice in turn on the same two threads."""
    import os
    import subprocess
    import sys
    import tempfile

    import yaml

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(SWEEP, sort_keys=False))

    def score() -> None:
        home = tempfile.mkdtemp(prefix="bioprior-perf-")
        out = subprocess.run(
            [sys.executable, "-m", "bioprior.registry.cli.app", "score", str(path)]
            + ["--device", "cpu", "--threads", "2"],
            env={**os.environ, "BIOPRIOR_HOME": home},
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "2 CPU workers x 1 thread" in out.stdout + out.stderr

    plain = _plain_epoch(fmnist)[2]
    interleave(benchmark, score, lambda: [plain() for _ in range(6)], rounds=2, warmup=0)
    flops = 6 * train_flops(_table2_net(0, fmnist), fmnist.train_x)
    record("fmnist-sweep", "engine", 6 * len(fmnist.train_x), flops)
