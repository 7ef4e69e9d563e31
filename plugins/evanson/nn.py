"""evanson's networks (Supporting information, "Network Definitions"), without Flexible Layers:
the ``flexible_layer`` constraint turns the conv each model marks into one (its default
placement ``"paper"``), and its threshold ``conv`` gives the paper's baselines.

* :class:`VGG16Flex`: the "Single Layer Baseline/Flexible VGG16" (Fig. 2A) with its BatchNorm,
  Dropout2d and the 512-100-classes head. The marked conv is the second of block 1,
  Conv2d(64, 64, 3, 1, 0) (no padding, as in the paper, so the map shrinks by 2 px).
* :class:`FlexibleSmallNet`: the "Small Network for FMNIST experiments" (Fig. 2B):
  Conv2d(1, 12, 5, 1, 0), Linear(6912, 120), Linear(120, 60), Linear(60, classes).

Deviations / choices (the paper's definitions are for 32 px CIFAR and 28 px FMNIST):

* The first linear layer is sized from ``input_size`` (12 * 24 * 24 = 6912 at 28 px; VGG16:
  512 at 32 px: 32 -> 30 after the unpadded conv, then four 2x2 poolings 15, 7, 3, 1). A 2x2
  pooling that would leave less than 1 px is skipped (16 px digits: 14 -> 7 -> 3 -> 1, the last
  pooling skipped), so small inputs work; larger inputs give a larger first linear layer.
* The "(c) Sigmoid()" listed under each Flexible Layer is read as the sigma of Eq. 1 (see
  ``bioprior.plugins.flexible_layer.nn``), not an activation of the network. The small
  network's listing shows no activation at all; like the PyTorch code it mirrors (activations
  applied in ``forward`` do not appear in a printed model) we put ReLU after the conv and the two
  hidden linear layers (``activation``: relu | sigmoid | none, none = the literal listing).
* ``width`` scales every layer's channels / units (paper: 1), for cheap CPU runs.

Hidden activations are ``nn.ReLU`` modules and the output layer has none, so constraints such
as ``internal_noise`` find them.
"""

from __future__ import annotations

import torch
from torch import nn

from bioprior.plugin import model_geometry, scaled
from bioprior.plugins.flexible_layer.nn import mark_flexible_site

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "none": nn.Identity}


def _conv_bn_relu(cin: int, cout: int, padding: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, padding), nn.BatchNorm2d(cout, momentum=0.1), nn.ReLU()]


class VGG16Flex(nn.Module):
    """evanson's CIFAR VGG16 (Supporting information, items 1-54), conv 2 marked for the
    Flexible Layer."""

    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32, width: float = 1.0
    ):
        super().__init__()
        c64, c128, c256, c512 = (scaled(c, width) for c in (64, 128, 256, 512))
        hidden = scaled(100, width)
        side = input_size - 2  # the unpadded conv 2 (paper item 4a)
        if side < 1:
            raise ValueError(f"vgg16_flex needs input_size >= 3, got {input_size}")

        def pool() -> nn.Module:
            nonlocal side
            if side < 2:
                return nn.Identity()  # input too small for another 2x2 pooling
            side //= 2
            return nn.MaxPool2d(2, 2, 0)

        site = mark_flexible_site(nn.Conv2d(c64, c64, 3, 1, 0))
        layers: list[nn.Module] = [
            *_conv_bn_relu(in_channels, c64),
            site,
            nn.BatchNorm2d(c64, momentum=0.1),
            nn.ReLU(),
            nn.Dropout2d(0.3),
            *_conv_bn_relu(c64, c128),
            *_conv_bn_relu(c128, c128),
            pool(),
            nn.Dropout2d(0.4),
            *_conv_bn_relu(c128, c256),
            *_conv_bn_relu(c256, c256),
            *_conv_bn_relu(c256, c256),
            pool(),
            nn.Dropout2d(0.4),
            *_conv_bn_relu(c256, c512),
            *_conv_bn_relu(c512, c512),
            *_conv_bn_relu(c512, c512),
            pool(),
            nn.Dropout2d(0.4),
            *_conv_bn_relu(c512, c512),
            *_conv_bn_relu(c512, c512),
            *_conv_bn_relu(c512, c512),
            pool(),
            nn.Dropout2d(0.5),
        ]
        self.features = nn.Sequential(*layers)
        self.side = side
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c512 * side * side, hidden),
            nn.Dropout(0.5),
            nn.BatchNorm1d(hidden, momentum=0.1),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )

    @classmethod
    def from_params(cls, params) -> VGG16Flex:
        return cls(*model_geometry(params), params.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FlexibleSmallNet(nn.Module):
    """evanson's small FMNIST network (Fig. 2B), its conv marked for the Flexible Layer."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        width: float = 1.0,
        activation: str = "relu",
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}")
        channels, h1, h2 = scaled(12, width), scaled(120, width), scaled(60, width)
        side = input_size - 4
        if side < 1:
            raise ValueError(f"flexible_small_net needs input_size >= 5, got {input_size}")
        act = _ACTIVATIONS[activation]
        self.features = nn.Sequential(
            mark_flexible_site(nn.Conv2d(in_channels, channels, 5, 1, 0)), act()
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, h1),
            act(),
            nn.Linear(h1, h2),
            act(),
            nn.Linear(h2, num_classes),
        )

    @classmethod
    def from_params(cls, params) -> FlexibleSmallNet:
        # built without a dataset: Fashion-MNIST's geometry (1 x 28 x 28, 10 classes)
        return cls(
            params.in_channels or 1,
            params.num_classes or 10,
            params.input_size or 28,
            params.width,
            params.activation,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
