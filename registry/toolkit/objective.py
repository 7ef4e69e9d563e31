"""Extra training terms that constraints attach to a model (li2019 Eq. 2, safarani2021 Sec. 2).

A constraint whose biology lives in the loss rather than in the architecture (a neural
similarity regularizer, a co-trained neural readout) attaches a :class:`TrainingObjective` in its
``apply`` with ``return attach_objective(module, objective)``: the network is wrapped in a
:class:`WithObjectives` whose forward is the network's own. The trainer finds every objective
among the model's modules, calls :meth:`TrainingObjective.prepare` once before the first step and
:meth:`TrainingObjective.total_loss` at every step; objectives chain in module order. Their
parameters (layer weights, readouts, learned noise) are trained with the model and saved with
its weights, so a cached model keeps them; their ``forward`` is never called by the network.
An objective that keeps other state between steps returns it from
:meth:`TrainingObjective.training_state` so that a training checkpoint can hold it.

Parameters that must not be weight-decayed (e.g. learned Flexible-Layer thresholds, evanson
Methods) are tagged with :func:`exclude_from_weight_decay`; the trainer's optimizer puts them in a
group with ``weight_decay=0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

NO_WEIGHT_DECAY = "_bioprior_no_weight_decay"


def exclude_from_weight_decay(param: nn.Parameter) -> nn.Parameter:
    """Tag ``param`` so the trainer's optimizer applies no weight decay to it; returns it."""
    setattr(param, NO_WEIGHT_DECAY, True)
    return param


def excluded_from_weight_decay(param: nn.Parameter) -> bool:
    return bool(getattr(param, NO_WEIGHT_DECAY, False))


@dataclass
class ObjectiveContext:
    """What an objective learns about the training run before its first step."""

    channels: int
    size: int
    device: torch.device
    seed: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    #: a CPU generator seeded from the training seed, for the objective's own sampling
    generator: torch.Generator = field(default_factory=torch.Generator)


@dataclass
class Batch:
    """One training step's task batch: images (model input units), labels and the task logits."""

    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor


class TrainingObjective(nn.Module):
    """Base class of an extra training term. Subclasses override :meth:`total_loss`."""

    def prepare(self, ctx: ObjectiveContext) -> None:
        """Called once before training (load or fit auxiliary data to the model's input)."""

    def total_loss(self, model: nn.Module, task_loss: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The loss to minimize given the task loss so far; ``model`` is the whole trained model
        (run it on the objective's own images to get their activations)."""
        return task_loss

    def epoch_metrics(self) -> dict[str, float]:
        """Running figures for the epoch that just ended (go into the training history); reset."""
        return {}

    def training_state(self) -> dict[str, Any] | None:
        """For a training checkpoint: the state this objective keeps between two steps that its
        parameters, its buffers and the context's generator do not hold (running means, a
        position in its own data order, the epoch's figures so far), as tensors, numbers,
        strings, None and lists, tuples or dicts of them; ``{}`` when there is none. None (the
        default) means unknown: a training with this objective is then not checkpointed, and a
        killed one starts over."""
        return None

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`training_state` returned (called after :meth:`prepare`, tensors
        back on the device they were on)."""

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            f"{type(self).__name__} is a training objective, not a layer: attach it with "
            "bioprior.registry.toolkit.objective.attach_objective(net, objective), not as a child of net"
        )


class WithObjectives(nn.Module):
    """A network plus the training objectives attached to it; its forward is the network's."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.objectives = nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def attach_objective(module: nn.Module, objective: TrainingObjective) -> WithObjectives:
    """``module`` with ``objective`` attached (wrapped once; later objectives are appended)."""
    wrapped = module if isinstance(module, WithObjectives) else WithObjectives(module)
    wrapped.objectives.append(objective)
    return wrapped


def objectives(model: nn.Module) -> list[TrainingObjective]:
    return [m for m in model.modules() if isinstance(m, TrainingObjective)]
