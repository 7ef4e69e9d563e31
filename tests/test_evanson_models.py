"""evanson's networks (Supporting information, "Network Definitions"): shapes at the paper's
and at small geometries, the paper's layer sizes, the baseline equals the plain network, and a
short training of the small network on digits that learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bioprior.plugins.flexible_layer.nn import FlexibleLayer

CIFAR = {"in_channels": 3, "input_size": 32, "num_classes": 10}
DIGITS16 = {"in_channels": 1, "input_size": 16, "num_classes": 10}


def build(registry, name: str, **params) -> nn.Module:
    torch.manual_seed(0)
    return registry.get("model", name).build(params).eval()


@pytest.mark.parametrize("name", ["vgg16_flex", "flexible_small_net"])
@pytest.mark.parametrize("geometry", [CIFAR, DIGITS16], ids=["3x32", "1x16"])
def test_output_shapes(registry, name, geometry):
    net = build(registry, name, width=0.25, **geometry)
    x = torch.rand(2, geometry["in_channels"], geometry["input_size"], geometry["input_size"])
    with torch.no_grad():
        assert net(x).shape == (2, 10)


def test_paper_layer_sizes(registry):
    vgg = build(registry, "vgg16_flex", **CIFAR)
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and (convs[1].in_channels, convs[1].out_channels) == (64, 64)
    assert convs[1].padding == (0, 0) and all(c.padding == (1, 1) for c in convs[2:])
    linears = [m for m in vgg.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 100), (100, 10)]
    assert [m.p for m in vgg.modules() if isinstance(m, nn.Dropout2d)] == [0.3, 0.4, 0.4, 0.4, 0.5]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in vgg.modules()) == 13
    small = build(registry, "flexible_small_net")  # built alone: FMNIST's 1 x 28 x 28
    conv = small.features[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (1, 12, (5, 5))
    linears = [m for m in small.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6912, 120), (120, 60), (60, 10)]
    # hidden activations are ReLU modules (internal_noise finds them), the output has none
    assert sum(isinstance(m, nn.ReLU) for m in small.modules()) == 3
    assert isinstance(small.classifier[-1], nn.Linear)
    literal = build(registry, "flexible_small_net", activation="none")
    assert not any(isinstance(m, nn.ReLU) for m in literal.modules())


def test_baseline_threshold_is_the_plain_network(registry):
    """The paper's baseline: the Flexible Layer with convolution chosen for every input."""
    plain = build(registry, "vgg16_flex", width=0.25, **CIFAR)
    constraint = registry.get("constraint", "flexible_layer").build({"threshold": "conv"})
    base = constraint.apply(build(registry, "vgg16_flex", width=0.25, **CIFAR)).eval()
    assert isinstance(base.features[3], FlexibleLayer)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(base(x), plain(x))
        pool = registry.get("constraint", "flexible_layer").build({"threshold": "pool"})
        pooled = pool.apply(build(registry, "vgg16_flex", width=0.25, **CIFAR)).eval()
        assert not torch.allclose(pooled(x), plain(x))


def test_internal_noise_composes_with_the_flexible_layer(registry):
    net = build(registry, "flexible_small_net", **DIGITS16)
    net = registry.get("constraint", "flexible_layer").build({"threshold": "random"}).apply(net)
    net = registry.get("constraint", "internal_noise").build({"sigma": 0.1}).apply(net)
    with torch.no_grad():
        assert net(torch.rand(2, 1, 16, 16)).shape == (2, 10)


def test_small_net_learns_digits_with_learned_thresholds(registry, bioprior_home):
    """A short real training (the paper's SGD recipe with a larger learning rate): the network
    learns and the thresholds move, without weight decay."""
    from bioprior.registry.engine.service import TrainingService, TrainingSpec
    from bioprior.registry.engine.trainer import accuracy
    from bioprior.registry.submissions.loading import resolve_component
    from bioprior.registry.submissions.schema import PluginRef, TrainingRecipe

    errors: list = []
    model = resolve_component(
        registry,
        "model",
        PluginRef(name="flexible_small_net", params={**DIGITS16, "width": 0.5}),
        (),
        errors,
    )
    flex = resolve_component(
        registry,
        "constraint",
        PluginRef(name="flexible_layer", params={"threshold": "learned", "init": 0.5}),
        (),
        errors,
    )
    data = resolve_component(registry, "dataset", PluginRef(name="digits"), (), errors)
    assert not errors
    recipe = TrainingRecipe(
        dataset="digits",
        epochs=4,
        batch_size=100,
        lr=0.02,
        momentum=0.9,
        weight_decay=0.006,
        schedule={"name": "step", "step_size": 20, "gamma": 0.7},
    )
    service = TrainingService(bioprior_home, torch.device("cpu"))
    trained = service.trained(TrainingSpec(model, (flex,), recipe, data, 0))
    layer = trained.module.net.features[0]
    assert isinstance(layer, FlexibleLayer) and layer.threshold.shape == (6, 12, 12)
    acc = accuracy(trained.module, trained.data.test_x, trained.data.test_y)
    assert acc > 0.8, acc
    assert trained.history["loss"][-1] < trained.history["loss"][0]
    assert not torch.allclose(layer.threshold, torch.full_like(layer.threshold, 0.5))


def test_registered_with_schemas(registry):
    for name in ("vgg16_flex", "flexible_small_net"):
        summary = registry.get("model", name).summary()
        assert {"in_channels", "num_classes", "input_size", "width"} <= set(summary["params"])
        assert "Evanson" in summary["citation"]
