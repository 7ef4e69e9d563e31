"""A small public toolkit for plugin authors: what models and constraints share.

- :func:`hidden_activations` finds every hidden activation module of a model and wraps it (once)
  in a :class:`HiddenActivation`, whose ``post`` list takes constraint operations (noise,
  rounding, failures). Output layers carry no activation module, so they are never touched.
- :func:`capture` is the one activation-capture mechanism: the outputs (or inputs) of some
  layers when a model runs on a batch, optionally stopping the forward pass after the last one.
- :func:`scaled` (a ``width`` multiplier on a layer's channels) and :func:`model_geometry` (a
  model's input channels, classes and input size, defaults filled) are the sizing helpers of
  every built-in model.
- :func:`gabor_kernel` is the Gabor filter of the V1-like front ends (vonenet's convention).
- :class:`LocalResponseNorm` is ``nn.LocalResponseNorm`` with the same numbers, faster on a CPU.

This module imports torch: import it from a plugin's torch body (``nn.py``), not from the
module its entry point names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from bioprior.registry.contracts.constraint import ConstraintError

#: a model built without a dataset (``create_model``) gets CIFAR-10's geometry by default
CIFAR10_GEOMETRY = {"in_channels": 3, "num_classes": 10, "input_size": 32}

#: the module types :func:`hidden_activations` treats as a hidden unit's nonlinearity
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.Sigmoid,
    nn.Tanh,
    nn.GELU,
    nn.ELU,
    nn.SiLU,
    nn.LeakyReLU,
    nn.Softplus,
    nn.Mish,
    nn.Hardswish,
)


# -- sizing ---------------------------------------------------------------------------------
def scaled(channels: int, width: float) -> int:
    """``channels`` times the ``width`` multiplier, rounded, at least 1."""
    return max(1, round(channels * width))


def model_geometry(params: Any, defaults: dict[str, int] | None = None) -> tuple[int, int, int]:
    """``(in_channels, num_classes, input_size)`` of ``ImageModelParams``, each from
    ``defaults`` (CIFAR-10's if None) where the parameters leave it None."""
    g = params.geometry(defaults or CIFAR10_GEOMETRY)
    return g["in_channels"], g["num_classes"], g["input_size"]


# -- hidden activations -----------------------------------------------------------------------
class HiddenActivation(nn.Module):
    """``post(act(x))``: a hidden unit's nonlinearity followed by constraint operations, in order."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act
        self.post = nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        for op in self.post:
            x = op(x)
        return x


def hidden_activations(model: nn.Module) -> list[HiddenActivation]:
    """Wrap (once) and return every hidden activation of ``model``, in module order."""
    for parent in list(model.modules()):
        if isinstance(parent, HiddenActivation):
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, ACTIVATION_TYPES):
                setattr(parent, name, HiddenActivation(child))
    found = [m for m in model.modules() if isinstance(m, HiddenActivation)]
    if not found:
        raise ConstraintError(f"{type(model).__name__} has no activation modules to constrain")
    return found


# -- capture ----------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by a capture hook to end the forward pass after the last captured layer."""


def capture(
    model: nn.Module,
    layers: Sequence[nn.Module],
    x: torch.Tensor,
    *,
    what: Literal["output", "input"] = "output",
    keep: Literal["first", "last"] = "first",
    stop: bool = False,
) -> list[Any]:
    """What each of ``layers`` (modules of ``model``) outputs (or receives as its first input)
    when ``model`` runs on ``x``; None for a layer the pass did not reach. A layer that runs
    more than once keeps its ``first`` or ``last`` value. ``stop``: end the pass once every
    layer has been seen (the layers above get neither the batch nor gradients from it). The
    hooks are removed on return."""
    found: list[Any] = [None] * len(layers)
    seen: set[int] = set()

    def hook(index: int):
        def record(module: nn.Module, args: tuple[Any, ...], output: Any = None) -> None:
            if keep == "last" or index not in seen:
                found[index] = args[0] if what == "input" else output
                seen.add(index)
            if stop and len(seen) == len(layers):
                raise _Stop

        return record

    handles = [
        layer.register_forward_pre_hook(hook(i))
        if what == "input"
        else layer.register_forward_hook(hook(i))
        for i, layer in enumerate(layers)
    ]
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return found


# -- Gabor filters ----------------------------------------------------------------------------
def gabor_kernel(
    frequency: float, sigma_x: float, sigma_y: float, theta: float, phase: float, ksize: int
) -> np.ndarray:
    """A ``ksize`` x ``ksize`` Gabor (frequency in cycles/px, sigmas in px, angles in radians)
    as in vonenet ``utils.gabor_kernel`` (Dapello et al. 2020): rows are x, columns y; the
    envelope is normalized to unit integral."""
    half = ksize // 2
    grid = np.arange(-half, half + 1, dtype=np.float64)
    x, y = np.meshgrid(grid, grid, indexing="ij")
    rot_x = x * np.cos(theta) + y * np.sin(theta)
    rot_y = -x * np.sin(theta) + y * np.cos(theta)
    envelope = np.exp(-0.5 * (rot_x**2 / sigma_x**2 + rot_y**2 / sigma_y**2))
    envelope /= 2 * np.pi * sigma_x * sigma_y
    return envelope * np.cos(2 * np.pi * frequency * rot_x + phase)


class LocalResponseNorm(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` (Krizhevsky et al. 2012; the LRN of Zhang et al.'s small AlexNet)
    with the same numbers, about 2.5x faster forward and backward on a CPU.

    Torch sums each channel window with ``avg_pool3d`` over a 5-d view, whose CPU kernel is slow
    (40% of a width-0.25 small AlexNet's training epoch on digits). Here the window sum is
    ``size`` shifted channel slices added in the order ``avg_pool3d`` adds them, then divided by
    ``size`` as it does (sums and quotients are correctly rounded whatever the order of the
    elements; ``pow``, which is not, runs on the same NCHW tensor as torch's): bit-identical
    forward and backward on a CPU in fp32 / fp64 and under bf16 autocast (where autocast runs
    ``avg_pool3d`` in fp32, so do the slices), in either memory layout
    (tests/test_local_response_norm.py). Anywhere else (CUDA, other dtypes, inputs that are not
    4-d) it is torch's own forward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        upcast = _lrn_upcast(x)
        if upcast is None:
            return super().forward(x)
        c, size = x.shape[1], self.size
        squares = x.mul(x)
        padded = nn.functional.pad(squares, (0, 0, 0, 0, size // 2, (size - 1) // 2))
        if upcast:
            padded = padded.float()
        window = padded[:, 0:c]
        for i in range(1, size):
            window = window + padded[:, i : i + c]
        base = (window / size).mul(self.alpha).add(self.k)
        # pow is not correctly rounded: its vectorized and scalar paths may differ in the last
        # bit, so it runs over the layout torch's runs over (avg_pool3d's output, NCHW)
        return x / base.contiguous().pow(self.beta)


def _lrn_upcast(x: torch.Tensor) -> bool | None:
    """Whether the fast LRN sums in fp32 (a bf16 input under CPU bf16 autocast); None where it
    does not apply (torch's own forward then)."""
    if x.dim() != 4 or x.device.type != "cpu":
        return None
    if x.dtype in (torch.float32, torch.float64):
        return False
    autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == x.dtype
    return True if x.dtype == torch.bfloat16 and autocast else None


__all__ = [
    "ACTIVATION_TYPES",
    "CIFAR10_GEOMETRY",
    "HiddenActivation",
    "LocalResponseNorm",
    "capture",
    "gabor_kernel",
    "hidden_activations",
    "model_geometry",
    "scaled",
]
