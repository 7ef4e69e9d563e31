"""evanson's "Conv2D model" (Supplementary Information): conv3x3(64) -> ReLU -> conv3x3(64) ->
ReLU -> max-pool 2 -> conv3x3(128) -> ReLU -> conv3x3(128) -> ReLU -> max-pool 2 ->
Linear(256) -> ReLU -> Linear(classes). For 32 x 32 inputs the first linear layer has
128 * 8 * 8 = 8192 inputs, as in the paper. Activations are ``nn.ReLU`` modules, so constraints
can wrap them; ``width`` scales every layer."""

from __future__ import annotations

import torch
from torch import nn

from bioprior.plugin import model_geometry, scaled


class CWConv2d(nn.Module):
    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32, width: float = 1.0
    ):
        super().__init__()
        c1, c2, hidden = scaled(64, width), scaled(128, width), scaled(256, width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
        )
        side = input_size // 4
        if side < 1:
            raise ValueError(f"cw_conv2d needs input_size >= 4, got {input_size}")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    @classmethod
    def from_params(cls, params) -> CWConv2d:
        in_channels, num_classes, input_size = model_geometry(params)
        return cls(in_channels, num_classes, input_size, params.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
