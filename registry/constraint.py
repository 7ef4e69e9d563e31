"""What a constraint plugin's factory returns: a :class:`Constraint` that edits a model.

Constraints are applied in the order a submission lists them. Each may change the model's
parameters before it is built (``configure``; e.g. the bottleneck's first-layer width) and/or
transform the built module (``apply``; e.g. noise after every hidden activation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from torch import nn


class ConstraintError(ValueError):
    """A constraint that cannot be applied to this model."""


class Constraint:
    """Base class: override ``configure`` and/or ``apply``."""

    #: model parameters this constraint needs (checked when a submission is validated)
    requires_model_params: tuple[str, ...] = ()

    def __init__(self, params: BaseModel):
        self.params = params

    def configure(self, model_name: str, model_params: dict[str, Any]) -> dict[str, Any]:
        """Return the model's parameters as this constraint wants them (before building)."""
        return model_params

    def apply(self, module: nn.Module) -> nn.Module:
        """Return the transformed module (after building)."""
        return module
