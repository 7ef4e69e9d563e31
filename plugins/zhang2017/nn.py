"""The small CIFAR networks of Zhang et al. (2017, Appendix A), as used by tsvetkov2020 (Methods).

Hidden activations are ``nn.ReLU`` modules and the output layer has none, so constraints can
find and wrap every hidden activation (``bioprior.plugin.hidden_activations``).
"""

from __future__ import annotations

import torch
from torch import nn

from bioprior.plugin import (
    CIFAR10_GEOMETRY,
    LocalResponseNorm,
    model_geometry,
    scaled,
)

# A model built without a dataset (``create_model``) gets CIFAR-10's geometry.
DEFAULT_GEOMETRY = CIFAR10_GEOMETRY


def _half(size: int) -> int:
    """Output size of a 3x3 / stride-2 / pad-1 pooling or conv."""
    return (size - 1) // 2 + 1


class SmallAlexNet(nn.Module):
    """Two (conv 5x5 -> ReLU -> max-pool 3x3/2 -> LRN) modules, then FC 384 -> 192 -> classes."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        input_size: int = 32,
        width: float = 1.0,
        first_conv_width: int | None = None,
        local_response_norm: bool = True,
    ):
        super().__init__()
        c1 = first_conv_width or scaled(200, width)
        c2 = scaled(200, width)
        norm = (
            (lambda: LocalResponseNorm(4, alpha=0.001 / 9.0, beta=0.75, k=1.0))
            if local_response_norm
            else nn.Identity
        )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, padding=1),
            norm(),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, padding=1),
            norm(),
        )
        side = _half(_half(input_size))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, scaled(384, width)),
            nn.ReLU(),
            nn.Linear(scaled(384, width), scaled(192, width)),
            nn.ReLU(),
            nn.Linear(scaled(192, width), num_classes),
        )

    @classmethod
    def from_params(cls, params) -> SmallAlexNet:
        in_channels, num_classes, input_size = model_geometry(params)
        return cls(
            in_channels,
            num_classes,
            input_size,
            params.width,
            params.first_conv_width,
            params.local_response_norm,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ConvModule(nn.Sequential):
    """conv k x k -> BatchNorm -> ReLU (Zhang et al., Fig. 3)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )


class InceptionModule(nn.Module):
    """Concatenation of a 1x1 and a 3x3 ConvModule."""

    def __init__(self, cin: int, ch1: int, ch3: int):
        super().__init__()
        self.branch1 = ConvModule(cin, ch1, 1)
        self.branch3 = ConvModule(cin, ch3, 3)
        self.out_channels = ch1 + ch3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x)], dim=1)


class DownsampleModule(nn.Module):
    """Concatenation of a stride-2 3x3 ConvModule and a 3x3/2 max-pool."""

    def __init__(self, cin: int, ch3: int):
        super().__init__()
        self.conv = ConvModule(cin, ch3, 3, stride=2)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.out_channels = ch3 + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], dim=1)


class SmallInception(nn.Module):
    """Zhang et al.'s small Inception (Fig. 3): 3x3 conv(96), inception/downsample stacks, mean pool."""

    PLAN = (
        ("inc", 32, 32),
        ("inc", 32, 48),
        ("down", 80),
        ("inc", 112, 48),
        ("inc", 96, 64),
        ("inc", 80, 80),
        ("inc", 48, 96),
        ("down", 96),
        ("inc", 176, 160),
        ("inc", 176, 160),
    )

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        input_size: int = 32,
        width: float = 1.0,
        first_conv_width: int | None = None,
    ):
        super().__init__()
        c = first_conv_width or scaled(96, width)
        layers: list[nn.Module] = [ConvModule(in_channels, c, 3)]
        for step in self.PLAN:
            if step[0] == "inc":
                block: nn.Module = InceptionModule(
                    c, scaled(step[1], width), scaled(step[2], width)
                )
            else:
                block = DownsampleModule(c, scaled(step[1], width))
            layers.append(block)
            c = block.out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    @classmethod
    def from_params(cls, params) -> SmallInception:
        in_channels, num_classes, input_size = model_geometry(params)
        return cls(in_channels, num_classes, input_size, params.width, params.first_conv_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))
