"""evanson's Flexible Layer (Methods, Eq. 1): the limits of Eq. 1, the mixing formula on a
hand-made input, the threshold modes, weight decay, placement and registration."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from bioprior.plugins.flexible_layer.nn import FlexibleLayer
from bioprior.registry.contracts.constraint import ConstraintError, InputGeometry
from bioprior.registry.toolkit.objective import excluded_from_weight_decay


def summing_conv(cin: int = 1, cout: int = 1, kernel: int = 2) -> nn.Conv2d:
    """A conv whose every output channel is the plain sum over its window (weights 1, bias 0)."""
    conv = nn.Conv2d(cin, cout, kernel)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    return conv


# x = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]: 2x2 windows give max [[4, 5], [7, 8]], sum [[8, 12], [20, 24]]
X = torch.arange(9.0).view(1, 1, 3, 3)
MAX = torch.tensor([[4.0, 5.0], [7.0, 8.0]])
SUM = torch.tensor([[8.0, 12.0], [20.0, 24.0]])


def constrained(registry, model: str, geometry: dict, **params) -> tuple[nn.Module, object]:
    """Build ``model`` with the flexible_layer constraint as the trainer does."""
    model_entry = registry.get("model", model)
    constraint = registry.get("constraint", "flexible_layer").build(params)
    model_params = model_entry.params.model_validate(geometry).model_dump()
    input_geometry = InputGeometry.of(model, model_params)
    model_params = constraint.configure(model, model_params)
    torch.manual_seed(0)
    net = model_entry.build(model_params)
    return constraint.apply(net, input_geometry), constraint


def test_eq1_limits_infinite_thresholds_select_pool_or_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, 1, 0)
    x = torch.randn(2, 3, 9, 9)
    plus = FlexibleLayer(conv, threshold="uniform", init=math.inf)
    minus = FlexibleLayer(conv, threshold="uniform", init=-math.inf)
    with torch.no_grad():
        torch.testing.assert_close(plus(x), nn.MaxPool2d(3, 1, 0)(x))
        torch.testing.assert_close(minus(x), conv(x))
        # the fixed branches are the same limits
        torch.testing.assert_close(FlexibleLayer(conv, threshold="pool")(x), plus(x))
        torch.testing.assert_close(FlexibleLayer(conv, threshold="conv")(x), minus(x))


def test_mixing_formula_on_a_hand_made_tensor():
    conv = summing_conv()
    hard = FlexibleLayer(conv, nn.MaxPool2d(2, 1), threshold="uniform", init=6.0)
    with torch.no_grad():
        # units whose max-pool (4, 5) is below T = 6 take the max-pool, the others the conv
        torch.testing.assert_close(hard(X)[0, 0], torch.tensor([[4.0, 5.0], [20.0, 24.0]]))
        # Eq. 1 itself, with a soft s = 1 so that both terms count
        soft = FlexibleLayer(conv, nn.MaxPool2d(2, 1), threshold="uniform", init=5.0, sharpness=1)
        sig = lambda v: 1.0 / (1.0 + math.exp(-v))
        expected = [
            [sig((5 - m) * 1) * m + sig(-(5 - m) * 1) * c for m, c in zip(mr, cr)]
            for mr, cr in zip(MAX.tolist(), SUM.tolist())
        ]
        torch.testing.assert_close(soft(X)[0, 0], torch.tensor(expected))


def test_reverse_swaps_the_branches():
    conv = summing_conv()
    rev = FlexibleLayer(conv, nn.MaxPool2d(2, 1), threshold="uniform", init=6.0, reverse=True)
    with torch.no_grad():
        # below the threshold the convolution (8, 12), above it the max-pool (7, 8)
        torch.testing.assert_close(rev(X)[0, 0], torch.tensor([[8.0, 12.0], [7.0, 8.0]]))


def test_default_pool_matches_the_conv_and_single_channel_pool_broadcasts():
    conv = nn.Conv2d(1, 12, 5, 1, 0)  # the FMNIST network's layer (Supplementary)
    layer = FlexibleLayer(conv, threshold="pool")
    assert (layer.pool.kernel_size, layer.pool.stride) == ((5, 5), (1, 1))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        out = layer(x)
    assert out.shape == (2, 12, 24, 24)
    pooled = nn.MaxPool2d(5, 1, 0)(x)
    for c in range(12):
        torch.testing.assert_close(out[:, c : c + 1], pooled)


def test_channel_mapping_is_cyclic_when_channels_differ():
    layer = FlexibleLayer(nn.Conv2d(2, 5, 3, 1, 1), threshold="pool")
    x = torch.randn(1, 2, 6, 6)
    with torch.no_grad():
        out, pooled = layer(x), nn.MaxPool2d(3, 1, 1)(x)
    assert out.shape == (1, 5, 6, 6)
    for c in range(5):
        torch.testing.assert_close(out[:, c], pooled[:, c % 2])


def test_mismatched_pool_is_a_clear_error():
    layer = FlexibleLayer(nn.Conv2d(1, 1, 3, 1, 1), nn.MaxPool2d(2, 2), threshold="uniform")
    with pytest.raises(ValueError, match="differ in size"):
        layer(torch.randn(1, 1, 8, 8))


def test_random_thresholds_change_between_passes_and_switch_off():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, 1, 0)
    x = torch.randn(3, 1, 10, 10)
    layer = FlexibleLayer(conv, threshold="random").eval()
    t0 = FlexibleLayer(conv, threshold="uniform", init=0.0)
    t1 = FlexibleLayer(conv, threshold="uniform", init=1.0)
    with torch.no_grad():
        a, b, low, high = layer(x), layer(x), t0(x), t1(x)
        assert not torch.equal(a, b)  # redrawn at inference (paper: training and inference)
        # every unit is the Eq. 1 output for T = 0 or for T = 1
        assert bool(((a - low).abs().lt(1e-6) | (a - high).abs().lt(1e-6)).all())
        differ = (low - high).abs() > 1e-3
        picked_high = (a - high).abs().lt(1e-6) & differ
        assert 0.3 < picked_high.sum() / differ.sum() < 0.7  # p = 1/2
        # independent draws per example: identical inputs give different outputs in one batch
        same = layer(x[:1].repeat(4, 1, 1, 1))
        assert not torch.equal(same[0], same[1])
        layer.at_inference = False  # the EOT contract: deterministic, the expected output
        c, d = layer(x), layer(x)
        torch.testing.assert_close(c, d)
        torch.testing.assert_close(c, (low + high) / 2)
        layer.train()  # training always draws
        assert not torch.equal(layer(x), layer(x))


def test_learned_thresholds_train_without_weight_decay(registry):
    from bioprior.registry.engine.trainer import make_optimizer
    from bioprior.registry.submissions.schema import TrainingRecipe

    geometry = {"in_channels": 1, "input_size": 28, "num_classes": 10}
    net, _ = constrained(registry, "flexible_small_net", geometry, threshold="learned", init=0.3)
    layer = net.features[0]
    assert isinstance(layer, FlexibleLayer)
    t = layer.threshold
    assert isinstance(t, nn.Parameter) and t.requires_grad and t.shape == (12, 24, 24)
    assert excluded_from_weight_decay(t) and torch.all(t == 0.3)
    recipe = TrainingRecipe(dataset="digits", lr=0.001, weight_decay=0.006)
    opt = make_optimizer(net, recipe)
    groups = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert groups[id(t)] == 0.0
    assert groups[id(layer.conv.weight)] == 0.006
    assert len(groups) == sum(1 for _ in net.parameters())
    # the threshold receives a gradient (soft sharpness so that units are not saturated)
    layer.sharpness = 1.0
    net(torch.randn(4, 1, 28, 28)).sum().backward()
    assert t.grad is not None and t.grad.abs().sum() > 0


def test_uniform_threshold_is_a_fixed_buffer():
    layer = FlexibleLayer(nn.Conv2d(1, 2, 3), threshold="uniform", init=0.6)
    assert [n for n, _ in layer.named_parameters()] == ["conv.weight", "conv.bias"]
    assert float(layer.state_dict()["threshold"]) == pytest.approx(0.6)
    assert layer.threshold.requires_grad is False


def test_lazy_learned_threshold_trains_with_an_optimizer_built_before_it():
    """Without ``input_size`` the thresholds get their (C, H, W) shape on the first forward pass;
    an optimizer built before that (as the trainer does) still trains them."""
    torch.manual_seed(0)
    layer = FlexibleLayer(nn.Conv2d(1, 2, 3), threshold="learned", init=0.2, sharpness=1.0)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.randn(4, 1, 7, 7)).square().sum().backward()
    opt.step()
    t = layer.threshold
    assert isinstance(t, nn.Parameter) and t.shape == (2, 5, 5) and excluded_from_weight_decay(t)
    assert not torch.allclose(t, torch.full_like(t, 0.2))
    fresh = FlexibleLayer(nn.Conv2d(1, 2, 3), threshold="learned")
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fresh.threshold, t)
    assert excluded_from_weight_decay(fresh.threshold)


def test_placement_on_vgg16(registry):
    geometry = {"in_channels": 3, "input_size": 32, "num_classes": 10, "width": 0.25}
    net, _ = constrained(registry, "vgg16_flex", geometry)
    flex = [m for m in net.modules() if isinstance(m, FlexibleLayer)]
    # default ("paper"): the second conv of block 1 (unpadded, 64 x width channels), unit thresholds
    assert len(flex) == 1 and net.features[3] is flex[0]
    assert flex[0].conv.padding == (0, 0) and flex[0].threshold.shape == (16, 30, 30)
    first, _ = constrained(registry, "vgg16_flex", geometry, layers=[1])
    assert isinstance(first.features[0], FlexibleLayer)
    assert first.features[0].threshold.shape == (16, 32, 32)
    every, _ = constrained(registry, "vgg16_flex", geometry, layers="all", threshold="random")
    wrapped = {id(m.conv) for m in every.modules() if isinstance(m, FlexibleLayer)}
    convs = {id(m) for m in every.modules() if isinstance(m, nn.Conv2d)}
    assert len(wrapped) == 13 and wrapped == convs  # every conv, none left bare
    with torch.no_grad():
        assert every.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConstraintError, match="beyond the 13 Conv2d"):
        constrained(registry, "vgg16_flex", geometry, layers=[2, 14])


def test_placement_params_validate(registry):
    entry = registry.get("constraint", "flexible_layer")
    assert entry.parse_params({"layers": 2}).layers == [2]
    assert entry.parse_params({"layers": "all"}).layers == "all"
    for bad in (
        {"layers": [0]},
        {"layers": []},
        {"layers": [1, 1]},
        {"threshold": "fixed"},
        {"sharpness": 0},
        {"init": math.inf},
        {"layer": [1]},
    ):
        with pytest.raises(ValidationError):
            entry.parse_params(bad)


def test_paper_placement_needs_a_marked_site(registry):
    geometry = {"in_channels": 3, "input_size": 32, "num_classes": 10}
    with pytest.raises(ConstraintError, match="marks no Flexible-Layer site"):
        constrained(registry, "cw_conv2d", geometry)
    net, _ = constrained(registry, "cw_conv2d", geometry, layers=[2])
    assert isinstance(net.features[2], FlexibleLayer)


def test_registered_with_a_schema(registry):
    entry = registry.get("constraint", "flexible_layer")
    summary = entry.summary()
    assert summary["params"]["threshold"]["default"] == "learned"
    assert summary["params"]["sharpness"]["default"] == 50.0
    assert summary["params"]["layers"]["default"] == "paper"
    assert "Evanson" in entry.citation
