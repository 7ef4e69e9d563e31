"""The adversarial benchmark's attack path (``run._batched_attack``: the attack's own ``run``, no
success check, input gradients only) gives the images of foolbox's ``attack(fmodel, x, y,
epsilons=eps)``, pixel for pixel, with the same seed: FGSM, FGM L2, PGD Linf and L2 (random
start), a minimization attack, and a model that draws noise at inference (EOT), whose random
stream must stay the same. The accuracy curves are therefore unchanged."""

from __future__ import annotations

import foolbox as fb
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bioprior import create_model
from bioprior.benchmarks.adversarial import run as adv_run
from bioprior.benchmarks.adversarial.eot import with_eot
from bioprior.benchmarks.adversarial.foolbox_attacks import (
    AttackPlugin,
    PGDEpsilonSearch,
    _PerSampleLinfPGD,
    draws_random_numbers,
    gradient_directions,
    shares_gradient,
    step_along,
    torch_module,
)
from bioprior.plugin import seeded
from bioprior.plugins.capacity.nn import GaussianNoise
from bioprior.registry.engine.trainer import Normalized
from bioprior.registry.toolkit.data import fit_data

BATCH = 24  # three batches of the 64 images: the random stream runs across batches

ATTACKS = {
    "fgsm": (lambda: fb.attacks.LinfFastGradientAttack(), "linf", [0.05, 0.1, 0.3]),
    "fgm_l2": (lambda: fb.attacks.L2FastGradientAttack(), "l2", [0.5, 2.0]),
    "pgd_linf": (
        lambda: fb.attacks.LinfPGD(steps=5, rel_stepsize=0.1, random_start=True),
        "linf",
        [0.02, 0.1],
    ),
    "pgd_l2": (
        lambda: fb.attacks.L2PGD(steps=5, rel_stepsize=0.1, random_start=True),
        "l2",
        [0.5, 2.0],
    ),
}


@pytest.fixture(scope="module")
def one_thread_module():
    """One torch thread (tests/conftest.py's ``one_thread``, for the module's fixture too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread_module):
    """small_alexnet on digits (16 px), two epochs of SGD: a model that classifies."""
    from bioprior.registry.hooks.loading import get_registry

    data = fit_data(get_registry(reload=True).get("dataset", "digits").build({}), 1, 16)
    torch.manual_seed(0)
    net = create_model("small_alexnet", in_channels=1, num_classes=10, input_size=16, width=0.25)
    mean, std = data.channel_stats()
    model = Normalized(net, mean, std)
    x, y = data.train_x.float(), data.train_y
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
        for idx in torch.randperm(len(x)).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval().zero_grad(set_to_none=True)
    xt, yt = data.test_x[:64].float().contiguous(), data.test_y[:64]
    with torch.no_grad():
        assert (model(xt).argmax(1) == yt).float().mean() > 0.5
    return model, xt, yt


def foolbox_batched(attack, fmodel, x, y, eps):
    """The reference: foolbox's ``__call__``, batch by batch, its clipped adversarials."""
    advs = [
        attack(fmodel, x[i : i + BATCH], y[i : i + BATCH], epsilons=eps)[1]
        for i in range(0, len(x), BATCH)
    ]
    return torch.cat(advs)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_same_adversarials_as_foolbox(trained, name):
    model, x, y = trained
    make, _, epsilons = ATTACKS[name]
    attack = make()
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")
    for eps in epsilons:
        with seeded(7):
            ours = adv_run._batched_attack(attack, fmodel, x, y, eps, BATCH)
            after_ours = torch.rand(3)
        with seeded(7):
            theirs = foolbox_batched(attack, fmodel, x, y, eps)
            after_theirs = torch.rand(3)
        assert torch.equal(ours, theirs), f"{name} at {eps}: images differ"
        assert torch.equal(after_ours, after_theirs)  # the same numbers drawn
        assert not torch.equal(ours, x)
    # the parameters are as before: trainable, no gradient accumulated by our path
    assert all(p.requires_grad for p in model.parameters())


def test_same_curves_as_foolbox(trained, monkeypatch):
    """fixed_epsilon_curve's accuracies through the new path equal those through ``__call__``."""
    model, x, y = trained
    mode = adv_run.Mode("deterministic", model, False, 1, 1)
    for name, (make, norm, epsilons) in ATTACKS.items():
        plugin = AttackPlugin(make(), norm, False)
        ours = adv_run.fixed_epsilon_curve(mode, plugin, x, y, [0.0, *epsilons], 3, BATCH)
        with monkeypatch.context() as m:
            m.setattr(
                adv_run,
                "_batched_attack",
                lambda a, f, x_, y_, e, b, *journal: foolbox_batched(a, f, x_, y_, e),
            )
            m.setattr(adv_run, "shares_gradient", lambda *a: False)  # foolbox per epsilon
            theirs = adv_run.fixed_epsilon_curve(mode, plugin, x, y, [0.0, *epsilons], 3, BATCH)
        assert ours == theirs, name
        assert ours["accuracy_raw"][-1] < ours["accuracy_raw"][0]  # the attack works


@pytest.mark.parametrize("name", ["fgsm", "fgm_l2"])
def test_one_gradient_serves_every_epsilon_of_a_fast_gradient_curve(trained, name, monkeypatch):
    """FGSM / FGM without random start on a deterministic model: the gradient is computed once
    per curve and each epsilon's images are foolbox's, bit for bit; not shared with a random
    start, an EOT gradient or a model that draws noise."""
    model, x, y = trained
    make, _, epsilons = ATTACKS[name]
    attack = make()
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")
    assert shares_gradient(attack, random_model=False)
    directions = gradient_directions(attack, fmodel, x, y, BATCH)
    for eps in epsilons:
        assert torch.equal(
            step_along(attack, fmodel, x, directions, eps),
            foolbox_batched(attack, fmodel, x, y, eps),
        ), f"{name} at {eps}"
    assert not shares_gradient(attack, random_model=True)
    assert not shares_gradient(with_eot(attack, 4), random_model=False)
    assert not shares_gradient(type(attack)(random_start=True), random_model=False)
    assert not shares_gradient(fb.attacks.LinfPGD(steps=1), random_model=False)
    calls = []
    gradient = type(attack).value_and_grad
    monkeypatch.setattr(type(attack), "value_and_grad", lambda *a: calls.append(1) or gradient(*a))
    mode = adv_run.Mode("deterministic", model, False, 1, 1)
    adv_run.fixed_epsilon_curve(
        mode, AttackPlugin(attack, "linf", False), x, y, [0.0, *epsilons], 3, BATCH
    )
    assert len(calls) == -(-len(x) // BATCH)  # once per batch, not per epsilon


def test_noisy_model_keeps_its_random_stream(trained):
    """A model that draws noise at inference, attacked with EOT: the success check's forward
    pass that foolbox makes is made too, so the same numbers are drawn and the same images
    come out."""
    model, x, y = trained
    noisy = nn.Sequential(GaussianNoise(0.05, at_inference=True), model).eval()
    fmodel = fb.PyTorchModel(noisy, bounds=(0, 1), device="cpu")
    assert draws_random_numbers(fmodel, x[:1])
    assert not draws_random_numbers(fb.PyTorchModel(model, bounds=(0, 1)), x[:1])
    attack = with_eot(fb.attacks.LinfPGD(steps=3, rel_stepsize=0.2), 2)
    with seeded(11):
        ours = adv_run._batched_attack(attack, fmodel, x, y, 0.05, BATCH)
        ours_eval = adv_run.correct_fraction(noisy, ours, y, 2)
    with seeded(11):
        theirs = foolbox_batched(attack, fmodel, x, y, 0.05)
        theirs_eval = adv_run.correct_fraction(noisy, theirs, y, 2)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours_eval, theirs_eval)


def test_minimization_attack_as_foolbox(trained):
    """epsilon None (minimal perturbations): the attack's unclipped result, as ``__call__``."""
    model, x, y = trained
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")
    attack = PGDEpsilonSearch(_PerSampleLinfPGD(steps=3, rel_stepsize=0.2), "linf", 3, None)
    with seeded(5):
        ours = adv_run._batched_attack(attack, fmodel, x, y, None, BATCH)
    with seeded(5):
        theirs = foolbox_batched(attack, fmodel, x, y, None)
    assert torch.equal(ours, theirs)


def test_torch_module_of_a_foolbox_model(trained):
    model = trained[0]
    assert torch_module(fb.PyTorchModel(model, bounds=(0, 1), device="cpu")) is model
    assert torch_module(object()) is None
