"""The torch side of the example plugin, imported only when a model is built."""

from __future__ import annotations

import torch
from torch import nn


class Failure(nn.Module):
    def __init__(self, p: float, at_inference: bool):
        super().__init__()
        self.p, self.at_inference = p, at_inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(x, self.p, training=self.training or self.at_inference)


def build_lenet5(params) -> nn.Module:
    cin, classes, size = params.in_channels or 1, params.num_classes or 10, params.input_size or 32
    c1, c2 = max(1, round(6 * params.width)), max(1, round(16 * params.width))
    side = ((size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"lenet5 needs input_size >= 16, got {size}")
    return nn.Sequential(
        nn.Conv2d(cin, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(c2 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes),
    )
