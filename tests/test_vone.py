"""The vone_block constraint against Dapello et al. (2020)'s VOneBlock (and vonenet's code):
Gabor bank from primate V1 distributions, simple / complex cells, neuronal noise, bottleneck."""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bioprior import create_model
from bioprior.benchmarks.adversarial.eot import deterministic_copy, is_stochastic
from bioprior.plugins import vone
from bioprior.plugins.vone import nn as vone_nn
from bioprior.registry.contracts.constraint import ConstraintError, InputGeometry

ROOT = Path(__file__).resolve().parents[1]


def _params(**overrides) -> vone.VOneParams:
    return vone.VOneParams(**overrides)


def _block(in_channels: int = 1, input_size: int = 64, **overrides):
    return vone_nn.VOneBlock(_params(**overrides), in_channels, input_size)


def _wrapped(registry, model: str = "small_alexnet", size: int = 16, **params):
    """``model`` (1-channel digits geometry) behind a vone_block, as the trainer builds it."""
    constraint = registry.get("constraint", "vone_block").build(params)
    geometry = {"in_channels": 1, "num_classes": 10, "input_size": size}
    model_params = constraint.configure(model, {**geometry, "width": 0.25})
    torch.manual_seed(0)
    return constraint.apply(create_model(model, **model_params), InputGeometry.of(model, geometry))


# -- Gabor parameters --------------------------------------------------------------------------


def test_sampled_parameters_follow_the_primate_histograms():
    p = vone.sample_gabor_params(20_000, seed=1, sf_corr=0.75, sf_max=6.0)
    # orientation: De Valois 1982a counts in 45-degree bins centred on 0, 45, 90, 135
    centred = (p["theta"] + 22.5) % 180
    counts = np.histogram(centred, bins=[0, 45, 90, 135, 180])[0] / len(centred)
    assert np.allclose(counts, vone.ORI_COUNTS / vone.ORI_COUNTS.sum(), atol=0.015)
    # spatial frequency: De Valois 1982b histogram truncated at sf_max = 6 (bins up to 5.6)
    sf_counts = np.histogram(p["sf"], bins=vone.SF_BINS[:8])[0] / len(p["sf"])
    assert np.allclose(sf_counts, vone.SF_COUNTS[:7] / vone.SF_COUNTS[:7].sum(), atol=0.015)
    assert p["sf"].min() >= 0.5 and p["sf"].max() <= 5.6
    # Ringach 2002: nx, ny in [0.1, 10^0.2]; the nx marginal has no cells above 10^-0.04
    assert p["nx"].min() >= 0.1 and p["nx"].max() <= 10**-0.04 + 1e-9
    assert p["ny"].min() >= 0.1 and p["ny"].max() <= 10**0.2 + 1e-9
    joint = np.histogram2d(p["nx"], p["ny"], bins=[vone.N_BINS, vone.N_BINS])[0] / 20_000
    assert np.allclose(joint, vone.N_JOINT / vone.N_JOINT.sum(), atol=0.015)
    assert 0 <= p["phase"].min() and p["phase"].max() < 360
    # sf and nx are positively correlated through the copula; independent with sf_corr = 0
    r = np.corrcoef(np.log(p["sf"]), np.log(p["nx"]))[0, 1]
    q = vone.sample_gabor_params(20_000, seed=1, sf_corr=0.0)
    r0 = np.corrcoef(np.log(q["sf"]), np.log(q["nx"]))[0, 1]
    assert r > 0.5 and abs(r0) < 0.05


def test_uniform_ablation_and_sf_range():
    p = vone.sample_gabor_params(20_000, seed=0, distribution="uniform", sf_max=6.0, sf_min=1.0)
    counts = np.histogram(p["theta"], bins=4, range=(0, 180))[0] / 20_000
    assert np.allclose(counts, 0.25, atol=0.015)
    assert p["sf"].min() >= 1.0 and p["sf"].max() <= 5.6
    with pytest.raises(ValueError, match="no spatial-frequency bin"):
        _params(sf_min=5.0, sf_max=5.5)
    with pytest.raises(ValueError, match="odd"):
        _params(ksize=14)


def test_same_seed_same_bank_different_seed_different_bank():
    a, b, c = _block(seed=0), _block(seed=0), _block(seed=1)
    assert torch.equal(a.weight, b.weight)
    assert not torch.allclose(a.weight, c.weight)
    assert not np.allclose(a.gabor_params["sf"], c.gabor_params["sf"])


def test_filters_are_gabors_with_the_sampled_frequency_and_orientation():
    """The amplitude spectrum of each filter peaks at its sampled (sf, theta). Checked on the
    filters whose envelope fits in the kernel and spans at least 0.35 cycles (nx): below that the
    two lobes of a Gabor's spectrum, at +-sf, merge and the peak moves towards zero."""
    block = _block(simple_channels=64, complex_channels=64, ksize=63, input_size=64,
                   visual_degrees=4.0)  # fmt: skip
    u = block.gabor_params
    n = block.out_channels
    fits = (3 * np.maximum(u["sigx"], u["sigy"]) < 31) & (u["nx"] > 0.35) & (u["sf"] > 0.06)
    assert fits.sum() >= 20
    pad = 512
    freqs = np.fft.fftfreq(pad)
    for i in np.where(fits)[0]:
        kernel = block.weight[i, 0].double().numpy()
        spectrum = np.abs(np.fft.fft2(kernel, s=(pad, pad)))
        r, c = np.unravel_index(spectrum.argmax(), spectrum.shape)
        fr, fc = freqs[r], freqs[c]  # cycles/px along rows (x) and columns (y)
        assert math.hypot(fr, fc) == pytest.approx(u["sf"][i], abs=1.5 / pad)
        angle = math.atan2(fc, fr) % math.pi
        diff = abs(angle - u["theta"][i] % math.pi)
        assert min(diff, math.pi - diff) < math.radians(3)
    # a complex cell's second filter is the same Gabor a quarter period later (phase + pi/2)
    j = block.simple_channels + int(np.where(fits[block.simple_channels :])[0][0])
    f0 = np.fft.fft2(block.weight[j, 0].double().numpy(), s=(pad, pad))
    f1 = np.fft.fft2(block.weight[n + j - block.simple_channels, 0].double().numpy(), s=(pad, pad))
    peak = np.unravel_index(np.abs(f0).argmax(), f0.shape)
    assert abs(f1[peak]) == pytest.approx(abs(f0[peak]), rel=1e-3)
    assert abs(abs(np.angle(f1[peak] / f0[peak])) - math.pi / 2) < 0.01


def test_each_filter_reads_one_random_input_channel():
    block = _block(in_channels=3, simple_channels=32, complex_channels=32)
    used = (block.weight.abs().sum(dim=(2, 3)) > 0).sum(1)
    assert torch.all(used == 1)
    assert set(block.gabor_params["channel"].tolist()) == {0, 1, 2}


# -- simple and complex cells ------------------------------------------------------------------


def _gratings(f: float, theta: float, phases: np.ndarray, size: int) -> torch.Tensor:
    """Sinusoidal gratings (one per phase), centred on the middle pixel: a drifting grating."""
    x, y = np.meshgrid(np.arange(size) - size // 2, np.arange(size) - size // 2, indexing="ij")
    arg = 2 * np.pi * f * (x * np.cos(theta) + y * np.sin(theta))
    g = np.cos(arg[None] + phases[:, None, None])
    return torch.tensor(g, dtype=torch.float32).unsqueeze(1)


def test_complex_cells_are_phase_invariant_simple_cells_are_not():
    """Responses at the centre to a grating drifting through 16 phases at each cell's preferred
    sf and orientation (VOneBlock: simple = ReLU(q0), complex = |(q0, q1)| / sqrt 2)."""
    k = 31
    block = _block(simple_channels=64, complex_channels=64, ksize=k, stride=1, input_size=64,
                   visual_degrees=4.0, at_inference=False).eval()  # fmt: skip
    u = block.gabor_params
    # envelopes inside the kernel, spanning >= 0.35 cycles (the quadrature pair's spectra then
    # overlap by < 1e-4); all frequencies <= 0.35 cycles/px, well below Nyquist
    good = (2.5 * np.maximum(u["sigx"], u["sigy"]) < k // 2) & (u["nx"] > 0.35)
    simple = int(np.where(good[: block.simple_channels])[0][0])
    cplx = block.simple_channels + int(np.where(good[block.simple_channels :])[0][0])
    phases = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    resp = {}
    for unit in (simple, cplx):
        out = block(_gratings(u["sf"][unit], u["theta"][unit], phases, k))
        assert out.min() >= 0  # simple (ReLU) and complex (energy) cells are non-negative
        resp[unit] = out[:, unit, k // 2, k // 2].numpy()
    s, c = resp[simple], resp[cplx]
    assert (c.max() - c.min()) / c.mean() < 0.02
    assert s.min() < 0.02 * s.max() and (s.max() - s.min()) / s.mean() > 1.5
    # gain: k_exc times the quadrature amplitude, about half the envelope's mass for a grating
    assert 0.25 * block.k_exc / math.sqrt(2) < c.mean() < block.k_exc / math.sqrt(2)


def test_complex_cell_gradient_is_finite_at_zero_input():
    block = _block(at_inference=False).eval()
    x = torch.zeros(1, 1, 16, 16, requires_grad=True)
    block(x).sum().backward()
    assert torch.isfinite(x.grad).all()


# -- stochastic responses ----------------------------------------------------------------------


def test_neuronal_noise_is_poisson_like():
    """Variance (in units of the response) = (noise_scale * x + noise_level) / noise_scale^2."""
    torch.manual_seed(0)
    for x in (0.5, 4.0):
        out = vone_nn.neuronal_noise(torch.full((400_000,), x), 0.35, 0.07)
        assert out.mean().item() == pytest.approx(x, abs=0.02)
        assert out.var().item() == pytest.approx((0.35 * x + 0.07 + 1e-4) / 0.35**2, rel=0.02)


def test_gaussian_noise_mode_std():
    block = _block(noise_mode="gaussian", noise_scale=0.5).eval()
    x = torch.rand(2, 1, 64, 64)
    pre = block.responses(x)
    torch.manual_seed(0)
    out = block.noise(pre)
    assert (out - pre).std().item() == pytest.approx(0.5, rel=0.03)


def test_noise_is_on_at_inference_by_default_and_off_with_the_switch(registry):
    torch.manual_seed(0)
    x = torch.randn(4, 1, 16, 16)
    model = _wrapped(registry).eval()
    block = model.vone_block
    assert block.at_inference is True and is_stochastic(model, x)
    det, switched = deterministic_copy(model)  # the eot contract
    assert switched == 1 and not is_stochastic(det, x)
    model.vone_block.at_inference = False
    assert torch.equal(model(x), model(x))
    assert torch.equal(block(x), torch.relu(block.responses(x)))  # the noise-free responses
    model.train()  # training always draws, as VOneNet
    assert not torch.equal(block(x), block(x))
    silent = _wrapped(registry, noise_mode="none").eval()
    assert not is_stochastic(silent, x)


# -- wrapping a model --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["small_alexnet", "cw_conv2d"])
@pytest.mark.parametrize(
    "params",
    [{}, {"back_end_size": "strided", "stride": 1}, {"bottleneck_channels": None, "stride": 4}],
)
def test_wrapped_output_shape_equals_bare(registry, model, params):
    x = torch.rand(3, 1, 16, 16)
    bare = create_model(model, in_channels=1, num_classes=10, input_size=16, width=0.25)
    wrapped = _wrapped(registry, model, **params)
    assert wrapped(x).shape == bare(x).shape == (3, 10)


def test_configure_sets_the_back_end_geometry(registry):
    entry = registry.get("constraint", "vone_block")
    geometry = {"in_channels": 3, "num_classes": 10, "input_size": 32, "width": 1.0}
    assert entry.build({}).configure("cw_conv2d", geometry)["in_channels"] == 16
    kept = entry.build({"bottleneck_channels": None}).configure("cw_conv2d", geometry)
    assert kept == geometry
    strided = entry.build({"back_end_size": "strided", "stride": 4, "visual_degrees": 1.0})
    assert strided.configure("cw_conv2d", geometry)["input_size"] == 8
    # 8 degrees on a 32 px image put 5.6 cycles/deg at 1.4 cycles/px: aliased, refused
    with pytest.raises(ConstraintError, match="Nyquist"):
        entry.build({"visual_degrees": 8.0}).configure("cw_conv2d", geometry)
    with pytest.raises(ConstraintError, match="input_size"):
        entry.build({}).configure("other", {"in_channels": 3})
    ignoring = entry.build({})
    ignoring.configure("cw_conv2d", geometry)
    with pytest.raises(ConstraintError, match="ignore in_channels"):
        ignoring.apply(create_model("cw_conv2d", in_channels=3), InputGeometry.of("x", geometry))


def test_gabor_bank_is_a_fixed_buffer_and_the_bottleneck_is_trained(registry):
    model = _wrapped(registry)
    params = {id(p) for p in model.parameters()}
    assert id(model.vone_block.weight) not in params
    assert id(model.bottleneck.weight) in params and model.bottleneck.weight.requires_grad
    assert "vone_block.weight" in model.state_dict()  # saved with the weights
    bank, bottleneck = model.vone_block.weight.clone(), model.bottleneck.weight.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 1, 16, 16)), torch.arange(8))
    loss.backward()
    opt.step()
    assert torch.equal(model.vone_block.weight, bank)
    assert not torch.equal(model.bottleneck.weight, bottleneck)


def test_wrapped_model_copies_and_pickles(registry):
    model = _wrapped(registry).eval()
    model.vone_block.at_inference = False
    x = torch.rand(2, 1, 16, 16)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert torch.equal(clone(x), model(x))


@pytest.mark.parametrize("name", ["vone-quick.yaml", "vone-cifar10.yaml"])
def test_shipped_vone_submissions_build(registry, name):
    """Validation cannot see the Nyquist check (it needs the image size): configure each
    submission's block for its dataset's geometry (digits fitted to 16 px; CIFAR-10 32 px)."""
    sub = yaml.safe_load((ROOT / "submissions" / name).read_text())
    size = sub["model"]["params"].get("input_size") or 32
    channels = 1 if sub["training"]["dataset"] == "digits" else 3
    geometry = {**sub["model"]["params"], "in_channels": channels, "input_size": size}
    for ref in sub["constraints"]:
        if ref["name"] == "vone_block":
            entry = registry.get("constraint", "vone_block")
            out = entry.build(ref.get("params", {})).configure(sub["model"]["name"], geometry)
            assert out["in_channels"] == entry.parse_params(ref.get("params")).bottleneck_channels


# -- real training -----------------------------------------------------------------------------


def test_wrapped_model_learns_digits(registry):
    from bioprior.registry.engine.trainer import Normalized, accuracy, train_model
    from bioprior.registry.submissions.schema import TrainingRecipe
    from bioprior.registry.toolkit.data import fit_data

    data = fit_data(registry.get("dataset", "digits").build({}), 1, 16)
    constraint = registry.get("constraint", "vone_block").build(
        {"simple_channels": 16, "complex_channels": 16, "bottleneck_channels": 8}
    )
    geometry = {"in_channels": 1, "num_classes": 10, "input_size": 16, "width": 0.125}
    torch.manual_seed(0)
    built = create_model("cw_conv2d", **constraint.configure("cw_conv2d", geometry))
    net = constraint.apply(built, InputGeometry.of("cw_conv2d", geometry))
    model = Normalized(net, *data.channel_stats())
    recipe = TrainingRecipe(dataset="digits", epochs=3, batch_size=64, lr=0.02, momentum=0.9)
    history = train_model(model, data.train_x, data.train_y, recipe, seed=0)
    assert history["loss"][-1] < history["loss"][0]
    assert accuracy(model, data.test_x, data.test_y) > 0.5  # chance: 0.1 (noise on at eval)
