"""The VGG-19-BN fully convolutional network (torch side of :mod:`bioprior.plugins.vgg19_fcn`,
which documents the model and its deviations from the paper)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from bioprior.plugin import scaled
from bioprior.plugins.vgg19_fcn import DEFAULT_GEOMETRY, HEAD_WIDTH, VGG19_PLAN, VGG19FCNParams


class ConvBlock(nn.Sequential):
    """conv 3x3 -> BatchNorm -> ReLU: one VGG-19-BN convolution (features.conv{b}_{i})."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()


class VGG19FCN(nn.Module):
    """VGG-19-BN features + fully convolutional head (safarani2021 Fig. 1)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 200,
        width: float = 1.0,
        dropout: float = 0.5,
        first_conv_width: int | None = None,
    ):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        cin, stage, index = in_channels, 1, 1
        for item in VGG19_PLAN:
            if item == "M":
                layers.append((f"pool{stage}", nn.MaxPool2d(2, 2, ceil_mode=True)))
                stage, index = stage + 1, 1
                continue
            cout = scaled(int(item), width)
            if stage == 1 and index == 1 and first_conv_width is not None:
                cout = first_conv_width
            layers.append((f"conv{stage}_{index}", ConvBlock(cin, cout)))
            cin, index = cout, index + 1
        self.features = nn.Sequential(OrderedDict(layers))
        head = scaled(HEAD_WIDTH, width)
        self.classifier = nn.Sequential(
            OrderedDict(
                fc6=nn.Conv2d(cin, head, 1),
                relu6=nn.ReLU(),
                drop6=nn.Dropout(dropout),
                fc7=nn.Conv2d(head, head, 1),
                relu7=nn.ReLU(),
                drop7=nn.Dropout(dropout),
                fc8=nn.Conv2d(head, num_classes, 1),
                pool=nn.AdaptiveMaxPool2d(1),
                flatten=nn.Flatten(),
            )
        )
        for m in self.modules():  # torchvision VGG._initialize_weights (convs and BN)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(params: VGG19FCNParams):
    """The model for validated parameters (None geometry: the paper's grayscale 64 px, 200 classes)."""
    geometry = params.geometry(DEFAULT_GEOMETRY)
    return VGG19FCN(
        geometry["in_channels"],
        geometry["num_classes"],
        params.width,
        params.dropout,
        params.first_conv_width,
    )
