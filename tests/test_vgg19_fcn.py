"""safarani2021's VGG-19-BN with a fully convolutional head (Sec. 2 "Architecture", Fig. 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bioprior.plugins.vgg19_fcn import VGG19_PLAN, VGG19FCNParams
from bioprior.plugins.vgg19_fcn.nn import VGG19FCN, build
from bioprior.registry.toolkit.layers import hidden_activations

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(**params) -> nn.Module:
    return build(VGG19FCNParams(**{"width": 0.125, "in_channels": 1, "num_classes": 10, **params}))


@pytest.mark.parametrize("size, conv3_1_side", [(64, 16), (16, 4)])
def test_output_and_conv3_1_shapes_for_grayscale_inputs(size, conv3_1_side):
    net = _net().eval()
    seen = {}
    handle = net.get_submodule("features.conv3_1").register_forward_hook(
        lambda m, i, o: seen.update(conv3_1=o.shape)
    )
    out = net(torch.rand(3, 1, size, size))
    handle.remove()
    assert out.shape == (3, 10)
    # conv-3-1 follows two 2x2 max-pools: size / 4, with 256 x width channels
    assert seen["conv3_1"] == (3, 32, conv3_1_side, conv3_1_side)


def test_plan_is_torchvisions_vgg19_and_width_1_matches_its_feature_parameters():
    from bioprior.registry.base.torchvision_compat import ensure_torchvision

    ensure_torchvision()
    from torchvision.models.vgg import cfgs, make_layers

    assert list(VGG19_PLAN) == cfgs["E"]
    ours = build(VGG19FCNParams(in_channels=3, num_classes=200)).features
    theirs = make_layers(cfgs["E"], batch_norm=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert [type(m) for m in ours.modules() if not isinstance(m, nn.Sequential)] == [
        type(m) for m in theirs.modules() if not isinstance(m, nn.Sequential)
    ]


def test_fully_convolutional_head_and_named_layers():
    net = _net()
    names = dict(net.named_modules())
    convs = [n for n, m in names.items() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16 + 3  # VGG-19's 16 convolutions + fc6, fc7, fc8 as 1x1 convs
    assert convs[4] == "features.conv3_1.conv"
    assert not any(isinstance(m, nn.Linear) for m in net.modules())
    head = net.classifier
    assert [head.fc6.kernel_size, head.fc7.kernel_size, head.fc8.kernel_size] == [(1, 1)] * 3
    assert head.fc6.out_channels == 512 and head.fc8.out_channels == 10
    assert head.drop6.p == head.drop7.p == 0.5
    assert isinstance(head.pool, nn.AdaptiveMaxPool2d)
    assert {"features.conv3_1", "features.conv3_1.bn", "features.pool5"} <= set(names)


def test_hidden_relus_are_wrappable_and_the_output_has_none():
    net = _net()
    wrapped = hidden_activations(net)
    assert len(wrapped) == 16 + 2  # one per conv block + relu6, relu7; fc8 has no activation
    assert all(not getattr(w.act, "inplace", False) for w in wrapped)
    assert isinstance(net.classifier[-3], nn.Conv2d)  # fc8 feeds the max-pool directly
    assert net(torch.rand(2, 1, 16, 16)).shape == (2, 10)


def test_width_first_conv_width_and_default_geometry():
    net = _net(width=0.25, first_conv_width=3)
    assert net.features.conv1_1.conv.out_channels == 3
    assert net.features.conv1_2.conv.out_channels == 16
    assert net.features.conv5_4.conv.out_channels == 128
    default = build(VGG19FCNParams(width=0.0625))  # no dataset: the paper's gray 64 px, 200 classes
    assert default.features.conv1_1.conv.in_channels == 1
    assert default(torch.rand(1, 1, 64, 64)).shape == (1, 200)


def test_registered_with_schema(registry):
    entry = registry.get("model", "vgg19_bn_fcn")
    params = entry.summary()["params"]
    assert {"width", "dropout", "in_channels", "input_size", "first_conv_width"} <= set(params)
    net = entry.build({"width": 0.0625, "in_channels": 3, "num_classes": 5})
    assert isinstance(net, VGG19FCN) and net(torch.rand(1, 3, 32, 32)).shape == (1, 5)
