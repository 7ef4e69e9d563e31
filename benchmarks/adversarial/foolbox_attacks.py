"""Factories of the attack plugins registered in :mod:`bioprior.benchmarks.adversarial.attacks`.

Every factory takes the parsed parameters and returns an :class:`AttackPlugin`: the foolbox 3
attack, its norm and whether it minimizes the perturbation (``minimal``) or works at fixed
epsilons. ``pgd_*_search`` is foolbox PGD with a per-image bisection on epsilon (li2019,
supplement: "PGD" in the Brendel et al. 2019 evaluation scheme), implemented as a foolbox
``MinimizationAttack`` so that it composes with the others.

:func:`clipped_adversarials` runs any of them as foolbox's ``attack(model, inputs, labels,
epsilons=epsilon)`` does and returns the same images, without the work whose result the benchmark
does not use (see there).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import eagerpy as ep
import foolbox as fb
import torch
from foolbox.attacks.base import (
    FixedEpsilonAttack,
    MinimizationAttack,
    get_criterion,
    raise_if_kwargs,
    verify_input_bounds,
)
from foolbox.attacks.gradient_descent_base import uniform_l2_n_balls
from foolbox.devutils import atleast_kd, flatten
from torch import nn

NORMS = ("linf", "l2", "l1", "l0")


@dataclass
class AttackPlugin:
    """What an attack plugin's factory returns."""

    attack: Any  # a foolbox.attacks.Attack
    norm: str  # linf | l2 | l1 | l0: the threat model the attack works in
    minimal: bool  # True: a MinimizationAttack (epsilons=None); False: fixed-epsilon


# -- running an attack ----------------------------------------------------------------------------
def clipped_adversarials(
    attack, fmodel, x: torch.Tensor, y: torch.Tensor, epsilon: float | None, keep_rng_stream: bool
) -> torch.Tensor:
    """The adversarials that ``attack(fmodel, x, y, epsilons=epsilon)`` returns second (clipped to
    the epsilon ball), computed as its ``__call__`` does (foolbox 3, ``attacks/base.py``): the
    input bounds verified, the attack's own ``run``, then ``distance.clip_perturbation``. Left
    out is the success check, a forward pass of the adversarials whose result the benchmark
    does not use; with ``keep_rng_stream`` (a model that draws random numbers when called) that
    pass is still made, so that a seeded run draws the same numbers. An attack that is neither a
    ``FixedEpsilonAttack`` nor a ``MinimizationAttack`` goes through ``__call__``."""
    if isinstance(attack, FixedEpsilonAttack) and epsilon is not None:
        kwargs = {"epsilon": epsilon}
    elif isinstance(attack, MinimizationAttack):
        kwargs = {"early_stop": epsilon}
    else:
        return attack(fmodel, x, y, epsilons=epsilon)[1]
    verify_input_bounds(ep.astensor(x), fmodel)
    adv = attack.run(fmodel, x, fb.criteria.Misclassification(y), **kwargs)
    if epsilon is not None:
        adv = attack.distance.clip_perturbation(x, adv, epsilon)
    if keep_rng_stream:
        with torch.no_grad():
            fmodel(adv)
    return adv


def torch_module(fmodel) -> nn.Module | None:
    """The module a foolbox ``PyTorchModel`` calls (foolbox 3 keeps it only in the closure of its
    ``_model`` function), or None."""
    for cell in getattr(getattr(fmodel, "_model", None), "__closure__", None) or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(contents, nn.Module):
            return contents
    return None


@contextmanager
def input_gradients_only(fmodel) -> Iterator[None]:
    """The model's parameters with ``requires_grad`` off for the block (restored after).
    foolbox takes gradients with ``loss.backward()`` (eagerpy), which computes, and accumulates
    into ``.grad``, the gradient of every parameter as well: for a network whose weights outweigh
    its activations most of the backward pass. The attacks use the input gradient only, whose
    computation does not change."""
    module = torch_module(fmodel)
    frozen = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _rng_states(device: torch.device) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def draws_random_numbers(fmodel, probe: torch.Tensor) -> bool:
    """Whether a forward pass of ``fmodel`` on ``probe`` draws from torch's global generators (a
    model random at inference), the generators' states restored after."""
    devices = [probe.device] if probe.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        before = _rng_states(probe.device)
        fmodel(probe)
        after = _rng_states(probe.device)
    return any(not torch.equal(a, b) for a, b in zip(before, after))


# -- one gradient for a whole curve ------------------------------------------------------------
def shares_gradient(attack, random_model: bool) -> bool:
    """Whether every epsilon of a curve steps along the same gradient: foolbox's one-step fast
    gradient attacks (FGSM, FGM L2) without random start, on a model that draws no random
    numbers, with foolbox's own gradient (not an EOT average)."""
    return (
        isinstance(attack, fb.attacks.LinfFastGradientAttack | fb.attacks.L2FastGradientAttack)
        and not attack.random_start
        and attack.steps == 1
        and "value_and_grad" not in vars(attack)
        and not random_model
    )


def gradient_directions(
    attack, fmodel, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """The normalized loss gradient of foolbox's fast gradient ``attack.run`` (its own
    ``get_loss_fn``, ``value_and_grad`` and ``normalize``), batch by batch as
    :func:`clipped_adversarials` runs it, computed once for every epsilon of a curve."""
    out = []
    with input_gradients_only(fmodel):
        for i in range(0, len(x), batch_size):
            x0 = ep.astensor(x[i : i + batch_size])
            verify_input_bounds(x0, fmodel)
            loss_fn = attack.get_loss_fn(fmodel, ep.astensor(y[i : i + batch_size]))
            _, gradients = attack.value_and_grad(loss_fn, x0)
            out.append(attack.normalize(gradients, x=x0, bounds=fmodel.bounds).raw.detach())
    return torch.cat(out)


def step_along(attack, fmodel, x: torch.Tensor, directions: torch.Tensor, epsilon: float):
    """What foolbox's fast gradient ``attack(fmodel, x, y, epsilons=epsilon)`` returns, from the
    gradient :func:`gradient_directions` computed: one step of ``rel_stepsize * epsilon`` (or
    ``abs_stepsize``), projected to the ball and the bounds, then clipped as ``__call__`` does
    (the same operations in the same order: the same images, bit for bit)."""
    x0, gradients = ep.astensor(x), ep.astensor(directions)
    stepsize = attack.rel_stepsize * epsilon if attack.abs_stepsize is None else attack.abs_stepsize
    adv = x0 + 1.0 * attack.get_optimizer(x0, stepsize)(gradients)  # untargeted: sign +1
    adv = ep.clip(attack.project(adv, x0, epsilon), *fmodel.bounds)
    return attack.distance.clip_perturbation(x0, adv, epsilon).raw


# -- fixed-epsilon attacks ------------------------------------------------------------------------
def build_fgsm(p) -> AttackPlugin:
    return AttackPlugin(
        fb.attacks.LinfFastGradientAttack(random_start=p.random_start), "linf", False
    )


def build_fgm_l2(p) -> AttackPlugin:
    return AttackPlugin(fb.attacks.L2FastGradientAttack(random_start=p.random_start), "l2", False)


def _pgd_kwargs(p) -> dict[str, Any]:
    return {
        "steps": p.steps,
        "rel_stepsize": p.rel_stepsize,
        "abs_stepsize": p.abs_stepsize,
        "random_start": p.random_start,
    }


def build_pgd_linf(p) -> AttackPlugin:
    return AttackPlugin(fb.attacks.LinfPGD(**_pgd_kwargs(p)), "linf", False)


def build_pgd_l2(p) -> AttackPlugin:
    return AttackPlugin(fb.attacks.L2PGD(**_pgd_kwargs(p)), "l2", False)


# -- PGD with a per-image bisection on epsilon --------------------------------------------------
class _PerSampleLinfPGD(fb.attacks.LinfPGD):
    """foolbox Linf PGD whose ``epsilon`` may be a per-sample tensor of shape (N, 1, ..., 1)."""

    def get_random_start(self, x0: ep.Tensor, epsilon) -> ep.Tensor:
        return x0 + epsilon * ep.uniform(x0, x0.shape, -1.0, 1.0)

    def project(self, x: ep.Tensor, x0: ep.Tensor, epsilon) -> ep.Tensor:
        return x0 + ep.minimum(ep.maximum(x - x0, -epsilon), epsilon)


class _PerSampleL2PGD(fb.attacks.L2PGD):
    """foolbox L2 PGD whose ``epsilon`` may be a per-sample tensor of shape (N, 1, ..., 1)."""

    def get_random_start(self, x0: ep.Tensor, epsilon) -> ep.Tensor:
        batch, n = flatten(x0).shape
        return x0 + epsilon * uniform_l2_n_balls(x0, batch, n).reshape(x0.shape)

    def project(self, x: ep.Tensor, x0: ep.Tensor, epsilon) -> ep.Tensor:
        d = x - x0
        norms = ep.maximum(flatten(d).norms.l2(axis=-1), 1e-12)
        factor = ep.minimum(ep.ones_like(norms), flatten(epsilon).max(axis=-1) / norms)
        return x0 + d * atleast_kd(factor, x.ndim)


class PGDEpsilonSearch(MinimizationAttack):
    """The smallest epsilon at which PGD finds an adversarial, bisected per image.

    First PGD at ``max_epsilon`` (images it cannot flip there keep no adversarial: the caller
    sees a failure), then ``search_steps`` bisections of each image's [lo, hi] interval; the
    returned image is the adversarial found at the smallest epsilon. Images already
    misclassified are returned unchanged (distance 0, as in Brendel et al. 2019).
    """

    def __init__(self, inner, norm: str, search_steps: int, max_epsilon: float | None):
        self.inner, self.norm = inner, norm
        self.search_steps, self.max_epsilon = search_steps, max_epsilon

    @property
    def distance(self):
        return fb.distances.linf if self.norm == "linf" else fb.distances.l2

    def run(self, model, inputs, criterion, *, early_stop=None, **kwargs):
        raise_if_kwargs(kwargs)
        x0, restore_type = ep.astensor_(inputs)
        criterion_ = get_criterion(criterion)
        n = len(x0)
        pixels = flatten(x0).shape[-1]
        lo_, hi_ = model.bounds
        top = self.max_epsilon or (
            (hi_ - lo_) if self.norm == "linf" else (hi_ - lo_) * pixels**0.5
        )
        shape = (n,) + (1,) * (x0.ndim - 1)
        lo = ep.zeros(x0, shape)
        hi = ep.full(x0, shape, top)
        best = x0
        found = criterion_(x0, model(x0))

        def attempt(eps: ep.Tensor) -> tuple[ep.Tensor, ep.Tensor]:
            adv = self.inner.run(model, x0, criterion_, epsilon=eps)
            return adv, criterion_(adv, model(adv))

        adv, ok = attempt(hi)
        new = ok.logical_and(found.logical_not())
        best = ep.where(atleast_kd(new, x0.ndim), adv, best)
        solvable = ok.logical_or(found)
        for _ in range(self.search_steps):
            mid = (lo + hi) / 2
            adv, ok = attempt(mid)
            ok = ok.logical_and(found.logical_not()).logical_and(solvable)
            okk = atleast_kd(ok, x0.ndim)
            best = ep.where(okk, adv, best)
            hi = ep.where(okk, mid, hi)
            lo = ep.where(okk, lo, mid)
        return restore_type(best)


def _search(p, norm: str) -> AttackPlugin:
    cls = _PerSampleLinfPGD if norm == "linf" else _PerSampleL2PGD
    inner = cls(steps=p.steps, rel_stepsize=p.rel_stepsize, random_start=p.random_start)
    return AttackPlugin(PGDEpsilonSearch(inner, norm, p.search_steps, p.max_epsilon), norm, True)


def build_pgd_linf_search(p) -> AttackPlugin:
    return _search(p, "linf")


def build_pgd_l2_search(p) -> AttackPlugin:
    return _search(p, "l2")


# -- minimization attacks -------------------------------------------------------------------------
def build_cw_l2(p) -> AttackPlugin:
    attack = fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=p.binary_search_steps,
        steps=p.steps,
        stepsize=p.stepsize,
        confidence=p.confidence,
        initial_const=p.initial_const,
        abort_early=p.abort_early,
    )
    return AttackPlugin(attack, "l2", True)


def build_ddn(p) -> AttackPlugin:
    attack = fb.attacks.DDNAttack(init_epsilon=p.init_epsilon, steps=p.steps, gamma=p.gamma)
    return AttackPlugin(attack, "l2", True)


def _fmn(cls, p, norm: str) -> AttackPlugin:
    attack = cls(
        steps=p.steps,
        max_stepsize=p.max_stepsize,
        gamma=p.gamma,
        binary_search_steps=p.binary_search_steps,
    )
    return AttackPlugin(attack, norm, True)


def build_fmn_linf(p) -> AttackPlugin:
    return _fmn(fb.attacks.LInfFMNAttack, p, "linf")


def build_fmn_l2(p) -> AttackPlugin:
    return _fmn(fb.attacks.L2FMNAttack, p, "l2")


def build_fmn_l1(p) -> AttackPlugin:
    return _fmn(fb.attacks.L1FMNAttack, p, "l1")


def build_fmn_l0(p) -> AttackPlugin:
    return _fmn(fb.attacks.L0FMNAttack, p, "l0")


def _bb(cls, p, norm: str) -> AttackPlugin:
    attack = cls(
        steps=p.steps,
        lr=p.lr,
        overshoot=p.overshoot,
        binary_search_steps=p.binary_search_steps,
    )
    return AttackPlugin(attack, norm, True)


def build_bb_l2(p) -> AttackPlugin:
    return _bb(fb.attacks.L2BrendelBethgeAttack, p, "l2")


def build_bb_linf(p) -> AttackPlugin:
    return _bb(fb.attacks.LinfinityBrendelBethgeAttack, p, "linf")


def build_bb_l1(p) -> AttackPlugin:
    return _bb(fb.attacks.L1BrendelBethgeAttack, p, "l1")


def build_bb_l0(p) -> AttackPlugin:
    return _bb(fb.attacks.L0BrendelBethgeAttack, p, "l0")
