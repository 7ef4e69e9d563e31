"""A trained model's logits, checked once: finite, of shape (batch, num_classes).

A model that returns NaN or wrong-shape logits would otherwise be scored as if it were a model
(argmax of NaN is a class); its jobs fail instead, with error class ``invalid_output``.
"""

from __future__ import annotations

import torch
from torch import nn

from bioprior.registry.base.failures import InvalidOutput
from bioprior.registry.engine.trainer import model_device
from bioprior.registry.toolkit.data import to_float


def check_logits(module: nn.Module, data, num: int = 16, finite: bool = True) -> None:
    """Raise :class:`InvalidOutput` unless ``module`` maps a few of ``data``'s test images to
    logits of shape (batch, num_classes), finite unless ``finite`` is False (the check before
    training: an untrained model is only asked for the shape). It runs in evaluation mode (no
    BatchNorm statistics move) with the RNG forked, so a model trains and draws the same numbers
    afterwards as it would have without the check."""
    x = data.test_x[:num] if len(data.test_x) else data.train_x[:num]
    x = to_float(x.to(model_device(module, x)))  # a streamed training split is on the host
    devices = [x.device] if x.device.type == "cuda" else []
    was_training = module.training
    module.eval()
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            out = module(x)
    finally:
        module.train(was_training)
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        return  # not logits (a plugin with a richer output): nothing to check here
    expected = (len(x), data.num_classes)
    if tuple(out.shape) != expected:
        raise InvalidOutput(f"logits of shape {tuple(out.shape)}, expected {expected}")
    if finite and not torch.isfinite(out).all():
        bad = int((~torch.isfinite(out)).sum())
        raise InvalidOutput(f"{bad} of {out.numel()} logits are NaN or infinite")
