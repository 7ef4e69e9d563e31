"""Autocast for the convolutions of a batched training, which ``vmap`` would leave in fp32.

Under ``torch.func.vmap`` torch's convolution batching rule runs below the autocast dispatch
key, so a member's ``conv2d`` inside a ``torch.autocast`` region keeps fp32 inputs while its
``linear`` layers do cast (measured with torch 2.13 on CPU; pytorch/functorch#305 and
pytorch/pytorch#187265 report the same gap for other ops and devices). A bf16 batched training
would then run its convolutions, most of its FLOPs, in fp32 while its history said bf16.
:class:`ConvAutocast` casts a convolution's floating-point inputs to the autocast dtype exactly
where autocast itself would (``lower_precision_fp`` policy; gradients flow back to the fp32
parameters through the cast), and only while autocast is enabled for the input's device, so a
nested ``torch.autocast(enabled=False)`` still keeps a layer in fp32.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

CONVOLUTIONS = frozenset(
    {
        torch.conv1d,
        torch.conv2d,
        torch.conv3d,
        torch.conv_transpose1d,
        torch.conv_transpose2d,
        torch.conv_transpose3d,
    }
)


def _cast(value, dtype: torch.dtype):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
        return value.to(dtype)
    return value


class ConvAutocast(TorchFunctionMode):
    """Within a ``torch.autocast`` region: every convolution's inputs, weight and bias in the
    autocast dtype (see the module docstring); every other call untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in CONVOLUTIONS and args and isinstance(args[0], torch.Tensor):
            device = args[0].device.type
            if torch.is_autocast_enabled(device):
                dtype = torch.get_autocast_dtype(device)
                args = tuple(_cast(a, dtype) for a in args)
                kwargs = {k: _cast(v, dtype) for k, v in kwargs.items()}
        return func(*args, **kwargs)
