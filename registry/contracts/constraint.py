"""What a constraint plugin's factory returns: a :class:`Constraint` that edits a model.

Constraints are applied in the order a submission lists them. Each may change the model's
parameters before it is built (``configure``; e.g. the bottleneck's first-layer width) and/or
transform the built module (``apply``; e.g. noise after every hidden activation). ``apply`` is
given the :class:`InputGeometry` of the images the model will receive, so a constraint that
probes the network (a forward pass on zeros) or builds a front end for it needs no state from
``configure``.

Every caller applies a constraint through :func:`apply_constraint`, which also accepts the first
published contract's ``apply(self, module)`` (deprecated in 0.2, accepted until at least 0.3):
such a constraint is called with the module only, and its class warns once.
"""

from __future__ import annotations

import inspect
import warnings
import weakref
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


#: per constraint class: does its ``apply`` take the geometry? (inspected once per class)
_TAKES_GEOMETRY: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _takes_geometry(constraint: Any) -> bool:
    """False for the first contract's ``apply(self, module)``: one positional parameter after
    ``self`` and no ``*args`` (anything else is given the geometry, positionally)."""
    try:
        parameters = inspect.signature(constraint.apply).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: assume today's contract
        return True
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) != 1 or positional[0].kind is inspect.Parameter.VAR_POSITIONAL


def _warn_legacy(cls: type) -> None:
    apply = inspect.unwrap(cls.apply)
    code = getattr(apply, "__code__", None)
    warnings.warn_explicit(
        f"{cls.__module__}.{cls.__qualname__}.apply(self, module) is the first constraint "
        "contract, deprecated since bioprior 0.2 and removed no earlier than 0.3: define "
        "apply(self, module, geometry=UNKNOWN_GEOMETRY) (InputGeometry and UNKNOWN_GEOMETRY "
        "from bioprior.plugin)",
        DeprecationWarning,
        code.co_filename if code else f"<{cls.__module__}>",
        code.co_firstlineno if code else 0,
        module=cls.__module__,
    )


def apply_constraint(
    constraint: Constraint, module: nn.Module, geometry: InputGeometry = UNKNOWN_GEOMETRY
) -> nn.Module:
    """``constraint.apply(module, geometry)``, the one way the core applies a constraint.

    A constraint written against the first contract (``apply(self, module)``) is called with the
    module only; its class warns once (``DeprecationWarning``, naming today's signature) instead
    of failing with a ``TypeError`` in the middle of a sweep."""
    cls = type(constraint)
    takes = _TAKES_GEOMETRY.get(cls)
    if takes is None:
        takes = _TAKES_GEOMETRY[cls] = _takes_geometry(constraint)
        if not takes:
            _warn_legacy(cls)
    return constraint.apply(module, geometry) if takes else constraint.apply(module)
