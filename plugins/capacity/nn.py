"""The torch side of tsvetkov2020's constraints (:mod:`bioprior.plugins.capacity`): the
operations put after every hidden activation (found and wrapped by
:func:`bioprior.plugin.hidden_activations`) and the nonlinearities it can swap in."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
}


class GaussianNoise(nn.Module):
    """Additive N(0, sigma^2) noise, as Keras' GaussianNoise: on in training, off at inference
    unless ``at_inference`` (tsvetkov2020, Methods: internal noise)."""

    batch_attributes = ("sigma",)  # per-member in a batched training (a 0-d tensor there)

    def __init__(self, sigma: float, at_inference: bool = False):
        super().__init__()
        self.sigma, self.at_inference = sigma, at_inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batched = isinstance(self.sigma, torch.Tensor)
        if not (batched or self.sigma > 0) or not (self.training or self.at_inference):
            return x
        # contiguous: the fast sampler, and the same draws whatever x's layout (channels_last)
        noise = torch.randn_like(x, memory_format=torch.contiguous_format)
        if batched:  # a member's sigma under vmap
            return x + self.sigma * noise
        return x + noise.mul_(self.sigma)  # in place: the same numbers, one tensor less

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, at_inference={self.at_inference}"


class _RoundSTE(torch.autograd.Function):
    """Rounding with a straight-through gradient; written in the torch.func style (forward
    without ctx, ``setup_context``, a generated vmap rule) so batched trainings can vmap it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # nothing to save
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class Quantize(nn.Module):
    """Uniform quantization to ``2**bits`` levels on [low, high] with a straight-through gradient
    (the precision limit proposed as future work in tsvetkov2020, Discussion)."""

    batch_attributes = ("low", "high", "step")  # per-member in a batched training

    def __init__(self, bits: int, low: float, high: float):
        super().__init__()
        self.bits, self.low, self.high = bits, low, high
        self.step = (high - low) / (2**bits - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(self.low, self.high)
        return _RoundSTE.apply((x - self.low) / self.step) * self.step + self.low

    def extra_repr(self) -> str:
        return f"bits={self.bits}, range=[{self.low}, {self.high}]"
