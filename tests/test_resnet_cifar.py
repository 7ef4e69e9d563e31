"""ResNet18 / ResNet34 with the CIFAR stem (li2019 Sec. 4.1), built on timm."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.mark.parametrize(("name", "blocks"), [("resnet18_cifar", 8), ("resnet34_cifar", 16)])
def test_cifar_stem_and_shapes(registry, name, blocks):
    net = registry.get("model", name).build({"in_channels": 1, "width": 0.25})
    conv1 = net.conv1
    assert isinstance(conv1, nn.Conv2d)
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.padding == (1, 1)
    assert conv1.in_channels == 1  # li2019's grayscale setting
    assert isinstance(net.maxpool, nn.Identity)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert sum(type(m).__name__ == "BasicBlock" for m in net.modules()) == blocks
    seen = {}
    hooks = [
        getattr(net, s).register_forward_hook(lambda m, a, o, s=s: seen.__setitem__(s, o.shape))
        for s in ("act1", "layer1", "layer2", "layer3", "layer4")
    ]
    out = net.eval()(torch.rand(2, 1, 32, 32))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 10)
    # the stem keeps 32 px; each later stage halves it (ImageNet stem: 8 px at layer1)
    assert seen["act1"] == (2, 16, 32, 32) and seen["layer1"] == (2, 16, 32, 32)
    assert seen["layer2"] == (2, 32, 16, 16) and seen["layer4"] == (2, 128, 4, 4)


def test_full_width_resnet18_is_the_cifar_resnet18(registry):
    net = registry.get("model", "resnet18_cifar").build({"in_channels": 3, "num_classes": 10})
    assert net.conv1.out_channels == 64 and net.layer4[-1].conv2.out_channels == 512
    # 11.17 M parameters: the standard CIFAR ResNet18 (3x3 stem conv instead of 7x7)
    assert abs(sum(p.numel() for p in net.parameters()) - 11_173_962) < 1000


def test_geometry_and_seeded_init(registry):
    entry = registry.get("model", "resnet18_cifar")
    torch.manual_seed(3)
    a = entry.build({"in_channels": 1, "num_classes": 4, "input_size": 8, "width": 0.125})
    torch.manual_seed(3)
    b = entry.build({"in_channels": 1, "num_classes": 4, "input_size": 8, "width": 0.125})
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert a.eval()(torch.rand(3, 1, 8, 8)).shape == (3, 4)


def test_width_must_be_positive(registry):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        registry.get("model", "resnet34_cifar").parse_params({"width": 0})
