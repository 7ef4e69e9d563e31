"""The plain PyTorch PGD loop of the perf pair (tests/perf/test_pgd.py) computes foolbox's
adversarials: without the random start both give the same images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bioprior import create_model
from bioprior.registry.engine.trainer import Normalized
from bioprior.registry.toolkit.data import fit_data

EPS, STEP = 0.031, 0.003


def test_same_arithmetic():
    import foolbox as fb

    from bioprior.registry.hooks.loading import get_registry

    data = fit_data(get_registry(reload=True).get("dataset", "digits").build({}), 1, 16)
    torch.manual_seed(0)
    net = create_model("small_alexnet", in_channels=1, num_classes=10, input_size=16, width=0.25)
    mean, std = data.channel_stats()
    model = Normalized(net, mean, std).eval()
    x, y = data.test_x[:32].float(), data.test_y[:32]
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")
    attack = fb.attacks.LinfPGD(steps=5, abs_stepsize=STEP, random_start=False)
    _, ours, _ = attack(fmodel, x, y, epsilons=EPS)

    adv = x.clone()
    for _ in range(5):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + STEP * grad.sign()
        adv = (x + (adv - x).clamp(-EPS, EPS)).clamp(0, 1)
    torch.testing.assert_close(ours, adv, atol=1e-6, rtol=0)
