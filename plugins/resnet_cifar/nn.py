"""The CIFAR-stem ResNets (torch side of :mod:`bioprior.plugins.resnet_cifar`, which documents
them); timm is imported with the torchvision shim in place."""

from __future__ import annotations

from torch import nn

from bioprior.plugin import ensure_torchvision
from bioprior.plugins.resnet_cifar import DEFAULT_GEOMETRY, STAGE_CHANNELS, ResNetCifarParams

ensure_torchvision()
import timm  # after the shim: timm imports torchvision


def build(params: ResNetCifarParams, architecture: str):
    """A timm ResNet with the CIFAR stem (3x3 / 1 conv1, no max-pool)."""
    geo = params.geometry(DEFAULT_GEOMETRY)
    # even widths: timm's "deep" stem sets the stem output (bn1, layer1's input) to 2 x stem_width;
    # the deep stem convs themselves are replaced by the CIFAR conv1 below
    channels = tuple(max(2, 2 * round(c * params.width / 2)) for c in STAGE_CHANNELS)
    net = timm.create_model(
        architecture,
        pretrained=False,
        num_classes=geo["num_classes"],
        in_chans=geo["in_channels"],
        channels=channels,
        stem_type="deep",
        stem_width=channels[0] // 2,
        drop_rate=params.drop_rate,
    )
    net.conv1 = nn.Conv2d(geo["in_channels"], channels[0], 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    return net


def resnet18_cifar(params: ResNetCifarParams):
    return build(params, "resnet18")


def resnet34_cifar(params: ResNetCifarParams):
    return build(params, "resnet34")
