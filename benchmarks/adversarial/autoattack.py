"""AutoAttack (Croce & Hein 2020) as a foolbox fixed-epsilon attack, through ``pyautoattack``
(the reference implementation; RobustBench's evaluation; ``pip install "bioprior[autoattack]"``).

:class:`AutoAttackFoolbox` runs the reference's ``run_standard_evaluation`` on each batch the
benchmark hands it, so AutoAttack fits wherever the adversarial benchmark takes an attack (a
robust-accuracy point, or a curve over epsilons). Images must lie in [0, 1] (the benchmark's
input space; AutoAttack clips to it). The reference's own checks (Croce et al., "flags_doc":
a randomized or dynamic defense, a softmax output, zero gradients, Square beating the
white-box attacks, too many target classes) are collected from its logger and warnings and
returned as ``autoattack_*`` flags, beside bioprior's own (:meth:`AutoAttackFoolbox.pop_report`).

Seeds: every run draws AutoAttack's seed from torch's global generator, which the benchmark
seeds from the submission, so the same job gives the same adversarials.

Shim: ``pyautoattack.checks`` counts, in a module-level dict, the gradient calls it sees while
tracing a forward pass (its dynamic-defense check) and never resets the counts, so after one
dynamic model every later model in the process would be flagged; the counts are reset before
each run (:func:`_reset_dynamic_counter`).
"""

from __future__ import annotations

import copy
import logging
import warnings
from contextlib import contextmanager
from typing import Any

import eagerpy as ep
import foolbox as fb
import torch
from foolbox.attacks.base import FixedEpsilonAttack, get_criterion, raise_if_kwargs
from foolbox.criteria import Misclassification
from pyautoattack import AutoAttack
from pyautoattack import checks as aa_checks
from torch import nn

from bioprior.benchmarks.adversarial.foolbox_attacks import AttackPlugin

STOCHASTIC_WITHOUT_RAND = "on a model random at inference"
#: the reference's check messages (pyautoattack.checks) -> bioprior flag names
CHECK_FLAGS = {
    "randomized defense": "autoattack_randomized",
    "probability distribution": "autoattack_softmax_output",
    "zero gradient": "autoattack_zero_gradients",
    "dynamic defense": "autoattack_dynamic",
    "Square Attack has decreased": "autoattack_square_beats_white_box",
    "classes": "autoattack_target_classes",
    STOCHASTIC_WITHOUT_RAND: "autoattack_stochastic_without_rand",  # bioprior's own warning
}
ALL_FLAGS = tuple(CHECK_FLAGS.values())
_DISTANCES = {"Linf": fb.distances.linf, "L2": fb.distances.l2, "L1": fb.distances.l1}
_NORMS = {"Linf": "linf", "L2": "l2", "L1": "l1"}


class _Logits(nn.Module):
    """A foolbox model seen as a torch module (AutoAttack calls ``model(x)`` on tensors)."""

    def __init__(self, fmodel):
        super().__init__()
        self.fmodel = fmodel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fmodel(x)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _captured_checks():
    """The warnings AutoAttack's checks emit (to its logger, or as Python warnings)."""
    handler = _Collect()
    logger = logging.getLogger("auto-attack")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield handler.messages
        handler.messages.extend(str(w.message) for w in caught if "pyautoattack" in w.filename)
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _reset_dynamic_counter() -> None:
    for name in aa_checks.funcs:
        aa_checks.funcs[name] = 0


def flags_of(messages: list[str]) -> dict[str, bool]:
    """bioprior's flag names for AutoAttack's check messages (every known flag, True or False)."""
    flags = dict.fromkeys(ALL_FLAGS, False)
    for message in messages:
        for needle, flag in CHECK_FLAGS.items():
            if needle in message:
                flags[flag] = True
    return flags


class AutoAttackFoolbox(FixedEpsilonAttack):
    """AutoAttack at one epsilon, as a foolbox ``FixedEpsilonAttack`` (see the module)."""

    def __init__(self, params: Any):
        self.params = params
        self.version = params.version
        self.stochastic_without_rand = False
        self._messages: list[str] = []

    @property
    def distance(self):
        return _DISTANCES[self.params.norm]

    def with_eot(self, samples: int) -> AutoAttackFoolbox:
        """This attack for a model random at inference (``samples`` > 1): the ``rand`` version
        (the reference's EOT, 20 passes), or unchanged with a warning (``on_stochastic: warn``)."""
        if samples <= 1 or self.version == "rand":
            return self
        other = copy.copy(self)
        other._messages = self._messages  # one report, whichever copy ran
        if self.params.on_stochastic == "rand":
            other.version = "rand"
        else:
            other.stochastic_without_rand = True
        return other

    def _build(self, net: nn.Module, epsilon: float, seed: int, device) -> AutoAttack:
        p = self.params
        attacks = list(p.attacks) if self.version == "custom" else None
        aa = AutoAttack(
            net, attacks=attacks, device=device, eps=epsilon, norm=p.norm, seed=seed,
            version=self.version,
        )  # fmt: skip
        if self.version == "custom":
            aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = p.iterations
            aa.apgd.n_restarts, aa.fab.n_restarts = p.apgd_restarts, p.fab_restarts
            aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = p.target_classes
            aa.square.n_queries = p.square_queries
        return aa

    def run(self, model, inputs, criterion, *, early_stop=None, epsilon: float, **kwargs):
        raise_if_kwargs(kwargs)
        x, restore_type = ep.astensor_(inputs)
        criterion_ = get_criterion(criterion)
        if not isinstance(criterion_, Misclassification):
            raise TypeError("autoattack: only untargeted misclassification is supported")
        if tuple(model.bounds) != (0, 1):
            raise ValueError(f"autoattack needs images in [0, 1], got bounds {model.bounds}")
        if self.stochastic_without_rand:
            message = (
                f"autoattack {self.version} {STOCHASTIC_WITHOUT_RAND}: robust accuracy may be "
                "overstated (on_stochastic: rand runs the reference's EOT version)"
            )
            warnings.warn(message, stacklevel=2)
            self._messages.append(message)
        raw = x.raw
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        aa = self._build(_Logits(model), float(epsilon), seed, raw.device)
        aa.verbose = False
        _reset_dynamic_counter()
        with _captured_checks() as messages:
            adv, _ = aa.run_standard_evaluation(
                raw, criterion_.labels.raw, batch_size=max(len(raw), 1)
            )
        self._messages.extend(messages)
        return restore_type(ep.astensor(adv.detach()))

    def pop_report(self) -> dict[str, Any]:
        """The flags (and the distinct check messages) of the runs since the last call."""
        messages, self._messages[:] = list(self._messages), []
        return {
            "version": self.version,
            "flags": flags_of(messages),
            "messages": sorted(set(messages))[:20],
        }


def build_autoattack(p) -> AttackPlugin:
    return AttackPlugin(AutoAttackFoolbox(p), _NORMS[p.norm], False)
