"""Pairs "attack-fgsm-curve" and "attack-pgd-curve": the adversarial benchmark's accuracy curves
(``fixed_epsilon_curve``: foolbox 3 attacks through the benchmark's attack path, then the accuracy
pass), its default FGSM and PGD Linf curves with the registered attacks' defaults, against plain
PyTorch loops written here with the same arithmetic, on the same model and images: evanson's
Table 2 network (``flexible_small_net``) trained briefly on the real Fashion-MNIST (skipped
without it), the first 512 test images in batches of 256 (the benchmark's default).

* FGSM (Goodfellow et al. 2015): per epsilon, ``x + eps * sign(grad of the summed
  cross-entropy)``, clamped to [0, 1].
* PGD Linf (Madry et al. 2018): per epsilon, a uniform random start in the ball, 20 steps of
  ``rel_stepsize * eps`` along the gradient's sign, each projected to the ball and to [0, 1].

Each side then counts the images still classified correctly at every epsilon (the curve's
running minimum too). Target: the benchmark within 1.1x of the plain loop (interleaved ratio
>= 0.91; ``extra_info["interleaved_ratio"]``, the reference's mean time over the engine's, as
``python -m bioprior.perf`` prints it)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from perfkit import DEVICE, interleave, sync

from bioprior.benchmarks.adversarial import AdversarialParams
from bioprior.benchmarks.adversarial.run import Mode, fixed_epsilon_curve
from bioprior.registry.engine.trainer import Normalized

pytestmark = pytest.mark.perf
IMAGES, BATCH = 512, 256
CURVES = AdversarialParams().curves  # the benchmark's default curves


@pytest.fixture(scope="module")
def setup():
    """The Table 2 network, two epochs of SGD on 12,000 training images (about 80% accuracy)."""
    from bioprior.registry.hooks.loading import get_registry
    from bioprior.registry.toolkit.data import DataUnavailable

    registry = get_registry(reload=True)
    try:
        data = registry.get("dataset", "fashion_mnist").build({})
    except DataUnavailable as exc:
        pytest.skip(
            f"real Fashion-MNIST unavailable ({exc}): apt-get install dataset-fashion-mnist"
        )
    entry = registry.get("model", "flexible_small_net")
    torch.manual_seed(0)
    mean, std = data.channel_stats()
    model = Normalized(entry.build(entry.params.model_validate({})), mean, std).to(DEVICE)
    x, y = data.train_x[:12_000].to(DEVICE).float() / 255, data.train_y[:12_000].to(DEVICE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(2):
        for idx in torch.randperm(len(x), device=DEVICE).split(100):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval().zero_grad(set_to_none=True)
    xt = (data.test_x[:IMAGES].to(DEVICE).float() / 255).contiguous()
    return model, xt, data.test_y[:IMAGES].to(DEVICE)


def _attack(name: str, **params):
    from bioprior.registry.hooks.loading import get_registry

    entry = get_registry().get("attack", name)
    return entry.build(entry.params.model_validate(params))


def _curve(model, x, y, epsilons, attack_batch) -> list[float]:
    """The plain loops' curve: per epsilon the adversarials batch by batch, the accuracy in one
    pass, the running minimum over epsilons (as the benchmark's ``accuracy``)."""
    running = None
    out = []
    for eps in epsilons:
        adv = x if eps == 0 else torch.cat([attack_batch(xb, yb, eps) for xb, yb in _batches(x, y)])
        with torch.no_grad():
            correct = (model(adv).argmax(1) == y).float()
        running = correct if running is None else torch.minimum(running, correct)
        out.append(running.mean().item())
    sync()
    return out


def _batches(x, y):
    return zip(x.split(BATCH), y.split(BATCH))


def plain_fgsm_curve(model, x, y, epsilons):
    def fgsm(xb, yb, eps):
        xb = xb.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xb), yb, reduction="sum"), xb)
        return (xb.detach() + eps * grad.sign()).clamp(0, 1)

    return _curve(model, x, y, epsilons, fgsm)


def plain_pgd_curve(model, x, y, epsilons, steps: int, rel_stepsize: float):
    def pgd(xb, yb, eps):
        adv = (xb + torch.empty_like(xb).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), yb, reduction="sum"), adv)
            adv = adv.detach() + rel_stepsize * eps * grad.sign()
            adv = (xb + (adv - xb).clamp(-eps, eps)).clamp(0, 1)
        return adv

    return _curve(model, x, y, epsilons, pgd)


def _engine(model, x, y, plugin, epsilons):
    mode = Mode("deterministic", model, False, 1, 1)

    def run() -> list[float]:
        curve = fixed_epsilon_curve(mode, plugin, x, y, epsilons, seed=0, batch_size=BATCH)
        sync()
        return curve["accuracy"]

    return run


def _ratio(benchmark) -> None:
    """The reference's mean time over the engine's, both from the interleaved rounds."""
    times = benchmark.extra_info["interleaved_reference_s"]
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.mean:
        benchmark.extra_info["interleaved_ratio"] = sum(times) / len(times) / stats.stats.mean


# -- FGSM ---------------------------------------------------------------------------------------
FGSM_EPS = CURVES["fgsm"].epsilons


@pytest.mark.benchmark(group="attack-fgsm-curve")
def test_benchmark_fgsm_curve(benchmark, record, setup):
    model, x, y = setup
    plugin = _attack("fgsm")
    ours = interleave(
        benchmark,
        _engine(model, x, y, plugin, FGSM_EPS),
        lambda: plain_fgsm_curve(model, x, y, FGSM_EPS),
        rounds=5,
    )
    _ratio(benchmark)
    record("attack-fgsm-curve", "engine", IMAGES * (len(FGSM_EPS) - 1))
    plain = plain_fgsm_curve(model, x, y, FGSM_EPS)
    assert ours[0] > 0.6  # a trained model
    assert max(abs(a - b) for a, b in zip(ours, plain)) <= 2 / IMAGES  # the same attack


@pytest.mark.benchmark(group="attack-fgsm-curve")
def test_plain_fgsm_curve(benchmark, record, setup):
    model, x, y = setup
    out = benchmark.pedantic(
        plain_fgsm_curve, args=(model, x, y, FGSM_EPS), rounds=5, iterations=1, warmup_rounds=1
    )
    record("attack-fgsm-curve", "reference", IMAGES * (len(FGSM_EPS) - 1))
    assert out[-1] < out[0]


# -- PGD Linf -------------------------------------------------------------------------------------
PGD_EPS = CURVES["pgd_linf"].epsilons


def _pgd_plugin():
    plugin = _attack("pgd_linf")
    return plugin, plugin.attack.steps, plugin.attack.rel_stepsize


@pytest.mark.benchmark(group="attack-pgd-curve")
def test_benchmark_pgd_curve(benchmark, record, setup):
    model, x, y = setup
    plugin, steps, rel = _pgd_plugin()
    ours = interleave(
        benchmark,
        _engine(model, x, y, plugin, PGD_EPS),
        lambda: plain_pgd_curve(model, x, y, PGD_EPS, steps, rel),
        rounds=3,
    )
    _ratio(benchmark)
    record("attack-pgd-curve", "engine", IMAGES * (len(PGD_EPS) - 1) * steps)
    benchmark.extra_info["image_steps"] = IMAGES * (len(PGD_EPS) - 1) * steps
    torch.manual_seed(0)
    plain = plain_pgd_curve(model, x, y, PGD_EPS, steps, rel)
    # the same attack (other random starts): the curves agree to a few images
    assert max(abs(a - b) for a, b in zip(ours, plain)) <= 0.03


@pytest.mark.benchmark(group="attack-pgd-curve")
def test_plain_pgd_curve(benchmark, record, setup):
    model, x, y = setup
    _, steps, rel = _pgd_plugin()
    out = benchmark.pedantic(
        plain_pgd_curve,
        args=(model, x, y, PGD_EPS, steps, rel),
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )
    record("attack-pgd-curve", "reference", IMAGES * (len(PGD_EPS) - 1) * steps)
    benchmark.extra_info["image_steps"] = IMAGES * (len(PGD_EPS) - 1) * steps
    assert out[-1] < out[0]
