"""What a constraint plugin's factory returns: a :class:`Constraint` that edits a model.

Constraints are applied in the order a submission lists them. Each may change the model's
parameters before it is built (``configure``; e.g. the bottleneck's first-layer width) and/or
transform the built module (``apply``; e.g. noise after every hidden activation). ``apply`` is
given the :class:`InputGeometry` of the images the model will receive, so a constraint that
probes the network (a forward pass on zeros) or builds a front end for it needs no state from
``configure``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from torch import nn


class ConstraintError(ValueError):
    """A constraint that cannot be applied to this model."""


@dataclass(frozen=True)
class InputGeometry:
    """The images a constrained model receives (channels x size x size) and its classes.

    A field is None where nobody said (a model built by ``create_model`` without a dataset)."""

    in_channels: int | None = None
    input_size: int | None = None
    num_classes: int | None = None
    model: str = ""  # the model's registered name, for messages

    @classmethod
    def of(cls, model: str, model_params: dict[str, Any]) -> InputGeometry:
        """The geometry a model's (filled) parameters describe."""
        return cls(
            model_params.get("in_channels"),
            model_params.get("input_size"),
            model_params.get("num_classes"),
            model,
        )


#: the geometry of a model built without a dataset: nothing known
UNKNOWN_GEOMETRY = InputGeometry()


class Constraint:
    """Base class: override ``configure`` and/or ``apply``."""

    #: model parameters this constraint needs; read by ``PluginEntry.requires_model_params``
    #: and checked when a submission is validated (the one place they are stated)
    requires_model_params: tuple[str, ...] = ()

    def __init__(self, params: BaseModel):
        self.params = params

    def configure(self, model_name: str, model_params: dict[str, Any]) -> dict[str, Any]:
        """Return the model's parameters as this constraint wants them (before building)."""
        return model_params

    def apply(self, module: nn.Module, geometry: InputGeometry = UNKNOWN_GEOMETRY) -> nn.Module:
        """Return the transformed module (after building); ``geometry`` is what it receives
        (the scorer always passes it; its fields are None where unknown)."""
        return module
