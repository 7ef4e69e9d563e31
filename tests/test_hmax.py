"""HMAX (pytorch_hmax / Serre et al. 2007) and evanson's Flexible HMAX (Fig. 2C, 4A), on small
tensors and a short real training run on digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bioprior import create_model
from bioprior.plugins.flexible_layer.nn import FlexibleLayer
from bioprior.plugins.hmax.nn import (
    C1,
    HMAX,
    S1,
    S2,
    AfferentMax,
    PrototypeDistance,
    c1_pool,
    correlate,
    gabor_filter,
    hmax_sizes,
)
from bioprior.registry.toolkit.objective import excluded_from_weight_decay

SMALL = {"input_size": 16, "bands": 4, "patch_sizes": (2, 4), "num_prototypes": 8}


def _small(**overrides) -> nn.Module:
    torch.manual_seed(0)
    return create_model("hmax", **{**SMALL, **overrides}).eval()


pytestmark = pytest.mark.usefixtures("one_thread")


# -- S1 ---------------------------------------------------------------------------------------
def test_paper_sizes_at_28_px_and_scaled_for_small_inputs():
    s1, _, c1 = hmax_sizes(8, 1.0)
    assert s1 == list(range(7, 38, 2)) and c1 == [8, 10, 12, 14, 16, 18, 20, 22]  # pytorch_hmax
    assert create_model("hmax", num_prototypes=2).s1.sizes == s1  # 28 px FMNIST: the paper's
    small = create_model("hmax", input_size=16, num_prototypes=2)
    assert all(k % 2 == 1 and k >= 3 for k in small.s1.sizes) and max(small.s1.sizes) < 37
    assert [c.spatial.kernel_size for c in small.c1] == hmax_sizes(8, 16 / 28)[2]


def test_s1_filters_are_zero_mean_unit_norm_fixed_gabors():
    model = _small()
    for scale, size in enumerate(model.s1.sizes):
        bank = model.s1.filters(scale)
        assert bank.shape == (4, size, size)
        assert torch.allclose(bank.sum((1, 2)), torch.zeros(4), atol=1e-5)
        assert torch.allclose(bank.flatten(1).norm(dim=1), torch.ones(4), atol=1e-5)
    assert not any(name.startswith("s1.") for name, _ in model.named_parameters())
    assert all(not p.requires_grad for p in model.s1.parameters())
    # a Gabor: a sinusoid under a Gaussian envelope, strongest at the centre
    g = gabor_filter(15, 4.0, 0.0)
    assert g.abs().argmax() == 7 * 15 + 7


@pytest.mark.parametrize(
    "grating, preferred",
    [
        (lambda r, c, lam: torch.cos(2 * math.pi * c / lam), 0.0),  # vertical bars
        (lambda r, c, lam: torch.cos(2 * math.pi * r / lam), 90.0),  # horizontal bars
        (lambda r, c, lam: torch.cos(2 * math.pi * (c - r) / (lam * math.sqrt(2))), 45.0),
        (lambda r, c, lam: torch.cos(2 * math.pi * (c + r) / (lam * math.sqrt(2))), -45.0),
    ],
)
def test_s1_orientation_tuning(grating, preferred):
    s1 = S1([11], [4.0])
    lam = 11 * 2 / 4.0
    r, c = torch.arange(32.0).view(-1, 1), torch.arange(32.0).view(1, -1)
    image = grating(r, c, lam).expand(32, 32)[None, None]
    response = s1(image)[0, 0, :, 8:24, 8:24].mean((1, 2))  # (orientations,)
    assert s1.orientations[int(response.argmax())] == preferred
    assert response.max() > 3 * response.sort().values[-2]


def test_s1_is_normalized_by_local_energy():
    s1 = S1([5, 7], [4.0, 3.95])
    x = torch.randn(2, 1, 12, 12)
    out = s1(x)
    assert out.shape == (2, 2, 4, 12, 12)
    assert out.min() >= 0 and out.max() <= 1 + 1e-5  # Cauchy-Schwarz: unit-norm filters
    assert torch.allclose(s1(3 * x), out, atol=1e-5)  # contrast invariant


# -- C1 ---------------------------------------------------------------------------------------
def test_c1_is_a_max_over_two_scales_and_a_local_window():
    torch.manual_seed(1)
    s1_pair = torch.rand(1, 2, 4, 6, 6)
    out = C1(c1_pool(4))(s1_pair)  # pool 4, stride 2, padding 2
    assert out.shape == (1, 4, 4, 4)
    both = s1_pair.amax(1)[0]
    for o in range(4):
        for i in range(4):
            for j in range(4):
                rows = slice(max(0, 2 * i - 2), 2 * i + 2)
                cols = slice(max(0, 2 * j - 2), 2 * j + 2)
                assert out[0, o, i, j] == both[o, rows, cols].max()


def test_c1_bands_pool_adjacent_scales():
    model = _small()

    class Marked(nn.Module):  # scale i holds the value i at one pixel
        def forward(self, x):
            s = torch.zeros(x.shape[0], 8, 4, 16, 16)
            s[:, :, :, 5, 5] = torch.arange(8.0).view(1, 8, 1)
            return s

    model.s1 = Marked()
    c1 = model.stages(torch.zeros(1, 1, 16, 16))["c1"]
    assert [c.max().item() for c in c1] == [1.0, 3.0, 5.0, 7.0]  # band b: scales 2b, 2b + 1


# -- S2 and C2 --------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["gaussian", "euclidean"])
def test_s2_is_the_distance_to_each_prototype(activation):
    torch.manual_seed(2)
    s2 = PrototypeDistance(4, 3, 3, activation=activation, sigma=0.4)
    x = torch.rand(1, 4, 7, 7)
    x[0, :, 2:5, 3:6] = s2.weight[1]  # prototype 1 centred at (3, 4)
    out = s2(x)
    padded = F.pad(x, (1, 1, 1, 1))
    for p in range(3):
        for i in range(7):
            for j in range(7):
                d2 = (padded[0, :, i : i + 3, j : j + 3] - s2.weight[p]).square().sum()
                want = (
                    torch.exp(-d2 / (2 * 0.4**2 * 36)) if activation == "gaussian" else -d2.sqrt()
                )
                assert torch.allclose(out[0, p, i, j], want, atol=1e-4)
    best = 1.0 if activation == "gaussian" else 0.0
    assert out[0, 1, 3, 4].item() == pytest.approx(best, abs=1e-3)
    assert out[0, 1].argmax() == 3 * 7 + 4


def test_c2_is_the_global_max_of_s2_and_has_one_value_per_prototype():
    model = _small()
    st = model.stages(torch.rand(3, 1, 16, 16))
    assert st["c2"].shape == (3, 2 * 8)
    want = torch.cat([torch.stack([m.amax((2, 3)) for m in maps]).amax(0) for maps in st["s2"]], 1)
    assert torch.equal(st["c2"], want)
    # the batched S2 pass over all bands equals applying the prototypes band by band
    for layer, maps in zip(model.s2, st["s2"]):
        for c, m in zip(st["c1"], maps):
            assert torch.allclose(layer.prototypes(c), m, atol=1e-5)


def test_c2_is_nearly_invariant_to_small_translations():
    model = _small()
    x = torch.zeros(8, 1, 16, 16)
    torch.manual_seed(3)
    x[:, :, 4:12, 4:12] = torch.rand(8, 1, 8, 8)  # patterns away from the border
    c2 = model.stages(x)["c2"]
    shifted = model.stages(torch.roll(x, (1, 2), dims=(2, 3)))["c2"]
    other = c2.roll(1, 0)  # a different pattern
    assert (shifted - c2).norm(dim=1).mean() < 0.3 * (other - c2).norm(dim=1).mean()


@pytest.mark.parametrize(
    "geometry", [(1, 10, 28), (1, 10, 16), (3, 5, 16), (1, 10, 8), (3, 10, 32)]
)
@pytest.mark.parametrize("variant", ["baseline", "flexible"])
def test_output_shapes(geometry, variant):
    cin, classes, size = geometry
    model = create_model(
        "hmax",
        in_channels=cin,
        num_classes=classes,
        input_size=size,
        variant=variant,
        num_prototypes=4,
    ).eval()
    assert model(torch.rand(2, cin, size, size)).shape == (2, classes)


def test_default_is_pytorch_hmax_scale():
    model = create_model("hmax").eval()
    assert len(model.c1) == 8 and [s.prototypes.kernel_size[0] for s in model.s2] == [4, 8, 12, 16]
    assert model(torch.rand(1, 1, 28, 28)).shape == (1, 10)
    assert model.stages(torch.rand(1, 1, 28, 28))["c2"].shape == (1, 4 * 400)


def test_only_prototypes_and_classifier_are_trained():
    model = _small()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"s2.{i}.prototypes.weight" for i in range(2)} | {
        "classifier.1.weight",
        "classifier.1.bias",
    }


# -- Flexible HMAX ----------------------------------------------------------------------------
def test_flexible_layers_sit_in_c1_and_s2():
    model = _small(variant="flexible")
    flex = [m for m in model.modules() if isinstance(m, FlexibleLayer)]
    assert len(flex) == 4 + 2 * 4  # one per C1 band, one per (prototype size, band)
    assert all(isinstance(c.spatial, FlexibleLayer) for c in model.c1)
    assert all(isinstance(c.spatial.pool, nn.MaxPool2d) for c in model.c1)
    for layer in model.s2:
        assert all(isinstance(u, FlexibleLayer) for u in layer.units)
        assert all(u.conv.owner is layer.prototypes for u in layer.units)  # shared prototypes
        assert all(isinstance(u.pool, AfferentMax) for u in layer.units)
    thresholds = [m.threshold for m in flex]
    assert all(t.requires_grad and excluded_from_weight_decay(t) for t in thresholds)
    conv = _small(variant="convolutional")
    assert {m.mode for m in conv.modules() if isinstance(m, FlexibleLayer)} == {"conv"}
    assert not any(isinstance(m, FlexibleLayer) for m in _small().modules())


def test_s2_flexible_pool_is_the_max_over_the_receptive_field():
    pool = AfferentMax(3, stride=1, padding=1)
    x = torch.rand(2, 4, 6, 6)
    out = pool(x)
    want = F.max_pool2d(x, 3, 1, 1).amax(1, keepdim=True)
    assert out.shape == x.shape and torch.equal(out, want.expand_as(x))


def test_threshold_conv_equals_the_convolutional_baseline():
    x = torch.rand(3, 1, 16, 16)
    conv = _small(variant="convolutional")
    assert torch.equal(_small(variant="flexible", threshold="conv")(x), conv(x))
    # learned thresholds far below every max-pool value: Eq. 1 selects the convolution
    low = _small(variant="flexible", threshold_init=-1e3)
    assert torch.allclose(low(x), conv(x), atol=1e-5)
    # and far above: C1 is the max-pool of the baseline, S2 the receptive-field max
    high = _small(variant="flexible", threshold_init=1e3).stages(x)
    base = _small().stages(x)
    assert all(torch.allclose(a, b) for a, b in zip(high["c1"], base["c1"]))
    assert not torch.allclose(conv.stages(x)["c1"][0], base["c1"][0])


def test_gradients_reach_prototypes_and_thresholds_not_s1():
    model = _small(variant="flexible").train()
    F.cross_entropy(model(torch.rand(4, 1, 16, 16)), torch.arange(4)).backward()
    assert model.s2[0].prototypes.weight.grad.abs().sum() > 0
    assert model.c1[0].spatial.conv.weight.grad.abs().sum() > 0
    assert any(u.threshold.grad.abs().sum() > 0 for u in model.s2[0].units)


def test_trains_on_digits_above_chance(registry):
    from bioprior.registry.engine.trainer import Normalized, accuracy, train_model
    from bioprior.registry.submissions.schema import TrainingRecipe
    from bioprior.registry.toolkit.data import fit_data

    data = fit_data(registry.get("dataset", "digits").build({}), 1, 16)
    mean, std = data.channel_stats()
    recipe = TrainingRecipe.model_validate(
        {"dataset": "digits", "epochs": 3, "batch_size": 32, "lr": 0.05, "momentum": 0.9}
    )
    model = Normalized(_small(num_prototypes=16).train(), mean, std)
    before = model.net.s2[0].prototypes.weight.detach().clone()
    train_model(model, data.train_x.float(), data.train_y, recipe, seed=0)
    assert accuracy(model, data.test_x.float(), data.test_y) > 0.5  # chance: 0.1
    assert not torch.equal(model.net.s2[0].prototypes.weight, before)  # prototypes learned


def test_flexible_weights_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    model = _small(variant="flexible")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "hmax.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))  # no aliases
    fresh = _small(variant="flexible")
    fresh.load_state_dict(load_file(str(path)))
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(fresh(x), model(x))
    assert fresh.s2[0].units[1].conv.owner is fresh.s2[0].prototypes  # still shared


def _s2_cropped_from_the_whole_output(self, c1):
    """The baseline's S2 as first written: all bands in one pass, each band cropped from the
    whole output (whose backward fills a zero gradient of the whole output per band)."""
    sizes = [c.shape[-1] for c in c1]
    big, n = max(sizes), c1[0].shape[0]
    out = self.prototypes(
        torch.cat([F.pad(c, (0, big - c.shape[-1], 0, big - c.shape[-1])) for c in c1])
    )
    k, p = self.prototypes.kernel_size[0], self.prototypes.padding[0]
    return [
        out[b * n : (b + 1) * n, :, : s + 2 * p - k + 1, : s + 2 * p - k + 1]
        for b, s in enumerate(sizes)
    ]


def test_baseline_s2_split_by_band_trains_to_the_same_weights(monkeypatch, one_thread):
    """The baseline's one padded pass over its bands (``S2.one_pass``; at 28 px S2 runs band
    by band instead, so it is called here directly) splits its output by band before cropping
    (a fifth off a training step): three SGD steps end at the same weights, bit for bit."""

    def trained() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = HMAX(variant="baseline", num_prototypes=24)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            x = torch.rand(12, 1, 28, 28, generator=gen)
            y = torch.randint(0, 10, (12,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return model.state_dict()

    monkeypatch.setattr(S2, "forward", S2.one_pass)  # the baseline has no units
    split = trained()
    monkeypatch.setattr(S2, "forward", _s2_cropped_from_the_whole_output)
    whole = trained()
    assert split.keys() == whole.keys()
    assert all(torch.equal(split[k], whole[k]) for k in split)


@pytest.mark.parametrize(
    ("map_hw", "patch_hw"),
    [((8, 8), (16, 16)), ((3, 3), (16, 16)), ((5, 4), (12, 8)), ((3, 3), (7, 7)), ((8, 8), (4, 4))],
)
def test_correlate_is_conv2d_with_zero_padding(map_hw, patch_hw):
    """S2's correlation (the map as the kernel where it is at most half the patch) gives
    ``F.conv2d``'s values and gradients, written out here as the sum over the padded windows."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, *map_hw, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.rand(5, 4, *patch_hw, dtype=torch.float64, generator=gen, requires_grad=True)
    padding = (patch_hw[0] // 2, patch_hw[1] // 2)
    ours = correlate(x, w, padding)
    padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    windows = padded.unfold(2, patch_hw[0], 1).unfold(3, patch_hw[1], 1)  # (n, c, i, j, u, v)
    reference = torch.einsum("ncijuv,pcuv->npij", windows, w)
    assert ours.shape == reference.shape == F.conv2d(x, w, padding=padding).shape
    torch.testing.assert_close(ours, reference)
    probe = torch.rand(reference.shape, dtype=torch.float64, generator=gen)
    grads = torch.autograd.grad((ours * probe).sum(), (x, w))
    expected = torch.autograd.grad((reference * probe).sum(), (x, w))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def _three_steps(variant: str, device: str = "cpu", **geometry) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = HMAX(variant=variant, **geometry).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    size = geometry.get("input_size", 28)
    for _ in range(3):
        x = torch.rand(12, 1, size, size, generator=gen).to(device)
        y = torch.randint(0, 10, (12,), generator=gen).to(device)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.cpu() for k, v in model.state_dict().items()}


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["baseline", "flexible"])
def test_paper_geometry_trains_on_the_gpu_as_on_the_cpu(monkeypatch, variant):
    """Fig. 4A's S2 at 28 px (band by band, maps slid over the prototypes) on a GPU: three SGD
    steps end where the CPU's end, in fp32 (TF32 off for the comparison)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cpu = _three_steps(variant, num_prototypes=16)
    gpu = _three_steps(variant, "cuda", num_prototypes=16)
    for name, value in cpu.items():
        torch.testing.assert_close(gpu[name], value, rtol=1e-3, atol=1e-4, msg=name)


def _direct_s2(monkeypatch) -> None:
    """S2 as it ran before ``correlate``: ``F.conv2d`` on every band, the baseline's bands in one
    zero-padded pass."""
    from bioprior.plugins.hmax import nn as hmax_nn

    monkeypatch.setattr(hmax_nn, "correlate", lambda x, w, p: F.conv2d(x, w, None, 1, p))
    monkeypatch.setattr(
        S2,
        "forward",
        lambda self, c1: (
            [u(c) for u, c in zip(self.units, c1)] if self.units else self.one_pass(c1)
        ),
    )


@pytest.mark.parametrize("variant", ["baseline", "flexible"])
def test_digits_geometry_trains_to_the_same_weights_as_before(monkeypatch, variant):
    """Where no C1 map is smaller than twice a patch (evanson-hmax-quick: maps of 5-8 units,
    patches of 2 and 4) S2 computes as it did before, so stored digits results stay what a rerun
    gives: three SGD steps end at the same weights, bit for bit."""
    quick = {"input_size": 16, "bands": 4, "patch_sizes": (2, 4), "num_prototypes": 25}
    now = _three_steps(variant, **quick)
    _direct_s2(monkeypatch)
    before = _three_steps(variant, **quick)
    assert all(torch.equal(now[k], before[k]) for k in now)


@pytest.mark.parametrize("variant", ["baseline", "convolutional", "flexible"])
def test_paper_geometry_trains_as_the_direct_convolution(monkeypatch, variant):
    """At 28 px (Fig. 4A: C1 maps of 3-8 units, patches of 4-16) S2 slides the maps over the
    prototypes and runs the baseline band by band: three SGD steps end where ``F.conv2d`` in one
    padded pass ends, up to float rounding."""
    geometry = {"num_prototypes": 16}
    now = _three_steps(variant, **geometry)
    _direct_s2(monkeypatch)
    before = _three_steps(variant, **geometry)
    for name, value in now.items():
        torch.testing.assert_close(value, before[name], rtol=1e-4, atol=1e-5, msg=name)
    if variant != "flexible":  # (its C2 comes from the 8-unit band at first, mostly direct)
        assert not all(torch.equal(now[k], before[k]) for k in now)  # it took the other path


def _s2_tail_as_written(monkeypatch) -> None:
    """S2's distance and Gaussian as pytorch_hmax writes them: ``x2 - 2 * xw + w2`` and
    ``exp(-d2 / (2 sigma^2 n))``, each operation its own pass."""

    def squared_distance(self, x):
        xw = correlate(x, self.weight, self.padding)
        x2 = F.conv2d(x.square().sum(1, keepdim=True), self.window, None, 1, self.padding)
        w2 = self.weight.square().sum((1, 2, 3)).view(1, -1, 1, 1)
        return (x2 - 2 * xw + w2).clamp_min(0.0)

    def forward(self, x):
        d2 = self.squared_distance(x)
        return torch.exp(-d2 / (2 * self.sigma**2 * self.weight[0].numel()))

    monkeypatch.setattr(PrototypeDistance, "squared_distance", squared_distance)
    monkeypatch.setattr(PrototypeDistance, "forward", forward)


@pytest.mark.parametrize("variant", ["baseline", "convolutional", "flexible"])
@pytest.mark.parametrize("size", [28, 16])
def test_s2_tail_with_fewer_passes_trains_to_the_same_weights(monkeypatch, variant, size):
    """S2's element-wise tail folds the doubling into the addition and the negation into the
    divisor (two passes fewer over the maps, forward and backward): exact in floats, so three
    SGD steps end at the same weights as the formula written out, bit for bit, at Fig. 4A's
    geometry and the digits one (a Fig. 4A run resumes across the change)."""
    geometry = {"num_prototypes": 16}
    if size == 16:
        geometry = {"input_size": 16, "bands": 4, "patch_sizes": (2, 4), "num_prototypes": 25}
    now = _three_steps(variant, **geometry)
    _s2_tail_as_written(monkeypatch)
    written = _three_steps(variant, **geometry)
    assert all(torch.equal(now[k], written[k]) for k in now)
