"""Factories of the attack plugins registered in :mod:`bioprior.benchmarks.adversarial.attacks`.

Every factory takes the parsed parameters and returns an :class:`AttackPlugin`: the foolbox 3
attack, its norm and whether it minimizes the perturbation (``minimal``) or works at fixed
epsilons. ``pgd_*_search`` is foolbox PGD with a per-image bisection on epsilon (li2019,
supplement: "PGD" in the Brendel et al. 2019 evaluation scheme), implemented as a foolbox
``MinimizationAttack`` so that it composes with the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import eagerpy as ep
import foolbox as fb
from foolbox.attacks.base import MinimizationAttack, get_criterion, raise_if_kwargs
from foolbox.attacks.gradient_descent_base import uniform_l2_n_balls
from foolbox.devutils import atleast_kd, flatten

NORMS = ("linf", "l2", "l1", "l0")


@dataclass
class AttackPlugin:
    """What an attack plugin's factory returns."""

    attack: Any  # a foolbox.attacks.Attack
    norm: str  # linf | l2 | l1 | l0: the threat model the attack works in
    minimal: bool  # True: a MinimizationAttack (epsilons=None); False: fixed-epsilon


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
