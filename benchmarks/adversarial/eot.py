"""Stochastic models under attack: detection, a deterministic mode, expectation over
transformation (EOT; Athalye, Carlini & Wagner 2018, Sec. 5).

Contract for stochastic constraints (internal noise, random Flexible-Layer thresholds, ...):
a module whose output is random at inference exposes a boolean attribute ``at_inference``;
setting it to ``False`` gives its deterministic (noise-off / expected) behaviour, as
:class:`bioprior.plugins.capacity.nn.GaussianNoise` does. :func:`deterministic_copy` sets it on
a deep copy, so the scored model itself is never changed. A model whose outputs still vary
after that is reported (``stochastic_without_switch``) and attacked with EOT in both modes.

EOT: a gradient attack on one sample of the noise overstates robustness. Fixed-epsilon
gradient attacks (foolbox ``BaseGradientDescent``: FGSM, PGD) get the gradient of the loss
averaged over ``K`` forward/backward passes (:func:`with_eot`); minimization attacks (C&W, DDN,
FMN, ...) run against :class:`ExpectedLogits`, the logits averaged over ``K`` passes (whose input
gradient is the average of the ``K`` per-sample logit gradients).
"""

from __future__ import annotations

import copy
import types

import eagerpy as ep
import torch
from foolbox.attacks.gradient_descent_base import BaseGradientDescent
from torch import nn


@torch.no_grad()
def is_stochastic(module: nn.Module, x: torch.Tensor, repeats: int = 2, atol: float = 1e-6) -> bool:
    """True when identical forward passes on ``x`` give different outputs."""
    first = module(x)
    return any(not torch.allclose(module(x), first, atol=atol, rtol=0) for _ in range(repeats - 1))


def deterministic_copy(module: nn.Module) -> tuple[nn.Module, int]:
    """A deep copy with every ``at_inference`` switch off; returns (copy, switches turned off)."""
    det = copy.deepcopy(module).eval()
    switched = 0
    for m in det.modules():
        if getattr(m, "at_inference", None) is True:
            m.at_inference = False
            switched += 1
    return det, switched


class ExpectedLogits(nn.Module):
    """The logits averaged over ``samples`` forward passes of a stochastic model (one batched
    pass of ``samples`` copies of the input)."""

    def __init__(self, module: nn.Module, samples: int):
        super().__init__()
        self.module, self.samples = module, samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.samples == 1:
            return self.module(x)
        out = self.module(x.repeat(self.samples, *([1] * (x.ndim - 1))))
        return out.view(self.samples, len(x), *out.shape[1:]).mean(0)


def _eot_value_and_grad(self, loss_fn, x: ep.Tensor):
    """The loss and its gradient averaged over ``self.eot_samples`` passes (fresh noise each)."""
    total_v, total_g = None, None
    for _ in range(self.eot_samples):
        v, g = ep.value_and_grad(loss_fn, x)
        total_v = v if total_v is None else total_v + v
        total_g = g if total_g is None else total_g + g
    return total_v / self.eot_samples, total_g / self.eot_samples


def with_eot(attack, samples: int):
    """``attack`` with its gradient averaged over ``samples`` passes (FGSM, PGD and any other
    foolbox ``BaseGradientDescent``, whose ``run`` takes its gradients from
    ``self.value_and_grad``); other attacks are returned unchanged (run them against
    :class:`ExpectedLogits` instead). An attack with its own EOT (a ``with_eot(samples)``
    method, e.g. AutoAttack's ``rand`` version) is asked for it. A shallow copy: the attack
    itself is not changed."""
    if callable(getattr(attack, "with_eot", None)):
        return attack.with_eot(samples)
    if samples <= 1 or not isinstance(attack, BaseGradientDescent):
        return attack
    eot = copy.copy(attack)
    eot.eot_samples = samples
    eot.value_and_grad = types.MethodType(_eot_value_and_grad, eot)
    return eot
