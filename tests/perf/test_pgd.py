"""Throughput (pytest-benchmark): PGD Linf through foolbox 3 against a plain PyTorch PGD loop with
the same arithmetic (uniform random start, summed cross-entropy, sign step, projection, clip to
[0, 1]), in the same run. Image-steps per second = images x steps / mean time, stored in
``extra_info``. Compare with
``pytest tests/perf/test_pgd.py -m perf --benchmark-enable``. The "engine" is foolbox (what the
adversarial benchmark runs), the reference the plain loop; ``tests/test_pgd_reference.py`` checks
that both compute the same adversarials."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from perfkit import DEVICE, interleave
from perfkit import sync as _sync

from bioprior import create_model
from bioprior.registry.engine.trainer import Normalized
from bioprior.registry.toolkit.data import fit_data

IMAGES, STEPS, EPS, STEP = 64, 20, 0.031, 0.003


@pytest.fixture(scope="module")
def setup():
    from bioprior.registry.hooks.loading import get_registry

    data = fit_data(get_registry(reload=True).get("dataset", "digits").build({}), 1, 16)
    torch.manual_seed(0)
    net = create_model("small_alexnet", in_channels=1, num_classes=10, input_size=16, width=0.25)
    mean, std = data.channel_stats()
    model = Normalized(net, mean, std).to(DEVICE).eval()
    x = data.test_x[:IMAGES].float().to(DEVICE)  # fit_data gives [0, 1] floats
    return model, x, data.test_y[:IMAGES].to(DEVICE)


def torch_pgd(model, x, y, eps=EPS, step=STEP, steps=STEPS):
    """Madry et al. PGD Linf, foolbox's arithmetic in plain PyTorch."""
    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step * grad.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1)
    return adv


@pytest.mark.benchmark(group="pgd-linf-image-steps")
def test_foolbox_pgd(benchmark, record, setup):
    import foolbox as fb

    model, x, y = setup
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=DEVICE)
    attack = fb.attacks.LinfPGD(steps=STEPS, abs_stepsize=STEP, random_start=True)

    def run():
        _, adv, _ = attack(fmodel, x, y, epsilons=EPS)
        _sync()
        return adv

    adv = interleave(benchmark, run, lambda: torch_pgd(model, x, y), rounds=5)
    benchmark.extra_info["image_steps"] = IMAGES * STEPS
    record("pgd-linf", "engine", IMAGES * STEPS)
    assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1


@pytest.mark.benchmark(group="pgd-linf-image-steps")
def test_plain_torch_pgd(benchmark, record, setup):
    model, x, y = setup

    def run():
        adv = torch_pgd(model, x, y)
        _sync()
        return adv

    adv = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["image_steps"] = IMAGES * STEPS
    record("pgd-linf", "reference", IMAGES * STEPS)
    assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
