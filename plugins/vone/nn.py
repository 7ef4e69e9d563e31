"""The VOneBlock and the front end that puts it before a model (torch side of
:mod:`bioprior.plugins.vone`, which documents the model, its parameters and the deviations from
vonenet)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bioprior.plugin import gabor_kernel
from bioprior.plugins.vone import VOneParams, sample_gabor_params


def gabor_bank(
    params: VOneParams, in_channels: int, input_size: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fixed weights, shape ``(S + 2 C, in_channels, k, k)`` (float32): the phase-``phi``
    filters of all ``S + C`` units (simple cells first), then the phase-``phi + pi/2`` filters of
    the ``C`` complex cells; and every unit's parameters in pixel units: ``sf`` (cycles/px),
    ``sigx`` / ``sigy`` (px), ``theta`` / ``phase`` (rad), ``nx``, ``ny``, ``channel``."""
    s, c = params.simple_channels, params.complex_channels
    raw = sample_gabor_params(
        s + c,
        params.seed,
        params.distribution,
        params.sf_corr,
        params.sf_max,
        params.sf_min,
        in_channels,
    )
    ppd = input_size / params.visual_degrees
    sf = raw["sf"] / ppd
    units = {
        "sf": sf,
        "sigx": raw["nx"] / sf,
        "sigy": raw["ny"] / sf,
        "theta": np.deg2rad(raw["theta"]),
        "phase": np.deg2rad(raw["phase"]),
        "nx": raw["nx"],
        "ny": raw["ny"],
        "channel": raw["channel"],
    }
    k = params.ksize
    weight = np.zeros((s + 2 * c, in_channels, k, k))
    quadrature = [(i, i, 0.0) for i in range(s + c)] + [
        (s + c + j, s + j, np.pi / 2) for j in range(c)
    ]
    for row, unit, shift in quadrature:
        weight[row, units["channel"][unit]] = gabor_kernel(
            sf[unit],
            units["sigx"][unit],
            units["sigy"][unit],
            units["theta"][unit],
            units["phase"][unit] + shift,
            k,
        )
    return weight.astype(np.float32), units


def neuronal_noise(x, scale: float, level: float):
    """Poisson-like noise (Dapello et al.'s V1 stochasticity; vonenet ``noise_f``, ``neuronal``):
    the rate ``scale * x + level`` gets Gaussian noise of variance ``relu(rate) + 1e-4`` (Poisson:
    variance = mean), mapped back to response units; the mean stays ``x``."""
    rate = x * scale + level
    noisy = rate + torch.randn_like(x) * torch.sqrt(torch.relu(rate) + 1e-4)
    return (noisy - level) / scale


class VOneBlock(nn.Module):
    """Dapello et al.'s VOneBlock: GFB -> simple (ReLU) and complex (energy) cells -> gain ->
    noise -> ReLU. The filter bank is a buffer (fixed, saved with the weights, not trained)."""

    def __init__(self, params: VOneParams, in_channels: int, input_size: int):
        super().__init__()
        weight, units = gabor_bank(params, in_channels, input_size)
        self.register_buffer("weight", torch.from_numpy(weight))
        self.gabor_params = units
        self.simple_channels, self.complex_channels = (
            params.simple_channels,
            params.complex_channels,
        )
        self.out_channels = params.simple_channels + params.complex_channels
        self.stride, self.padding = params.stride, params.ksize // 2
        self.k_exc = params.k_exc
        self.noise_mode = params.noise_mode
        self.noise_scale, self.noise_level = params.noise_scale, params.noise_level
        self.at_inference = params.at_inference

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free simple and complex responses (times ``k_exc``), simple cells first."""
        q = F.conv2d(x, self.weight, None, self.stride, self.padding)
        s, n = self.simple_channels, self.out_channels
        simple = torch.relu(q[:, :s])
        energy = q[:, s:n] ** 2 + q[:, n:] ** 2
        complex_ = torch.sqrt(energy.clamp_min(1e-12)) / math.sqrt(2.0)
        return self.k_exc * torch.cat((simple, complex_), 1)

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise_mode == "none" or not (self.training or self.at_inference):
            return x
        if self.noise_mode == "neuronal":
            return neuronal_noise(x, self.noise_scale, self.noise_level)
        return x + self.noise_scale * torch.randn_like(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.noise(self.responses(x)))

    def extra_repr(self) -> str:
        k = self.weight.shape[-1]
        return (
            f"simple={self.simple_channels}, complex={self.complex_channels}, ksize={k}, "
            f"stride={self.stride}, k_exc={self.k_exc}, noise={self.noise_mode}, "
            f"at_inference={self.at_inference}"
        )


class VOneFrontEnd(nn.Module):
    """``model(upsample(bottleneck(vone_block(x))))``; the upsampling (bilinear, to the
    input's size) only when ``upsample``."""

    def __init__(self, block: VOneBlock, bottleneck: nn.Conv2d, model: nn.Module, upsample: bool):
        super().__init__()
        self.vone_block, self.bottleneck, self.model = block, bottleneck, model
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bottleneck(self.vone_block(x))
        if self.upsample and y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.model(y)
