"""The ``flexible_layer`` constraint: evanson's Flexible Layer (Methods, Eq. 1, Fig. 2) in place
of chosen Conv2d layers of any model.

The layer itself, :class:`FlexibleLayer` (an ``nn.Module``), lives in
:mod:`bioprior.plugins.flexible_layer.nn` so that listing plugins never imports torch
(``from bioprior.plugins.flexible_layer.nn import FlexibleLayer``). See that module for Eq. 1,
the threshold modes and the choices the paper leaves open.

Placement (``layers``): ``"paper"`` replaces the convs the model marks as the paper's
Flexible-Layer sites (:func:`mark_flexible_site`; vgg16_flex: the second conv of block 1, the
"Single Flexible Layer VGG16"; flexible_small_net: its only conv), ``"all"`` every Conv2d (the
"All Layers Flexible" VGG16), or a list of 1-based indices among the model's Conv2d modules in
definition order. Learned thresholds (one per output unit) are created at apply time from the
conv's input size, measured by one forward pass on zeros of the input geometry ``apply``
receives, so they are ordinary parameters when the trainer builds its optimizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from bioprior.plugin import (
    UNKNOWN_GEOMETRY,
    Constraint,
    ConstraintError,
    InputGeometry,
    PluginParams,
    hookimpl,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FlexibleLayerConstraint", "FlexibleLayerParams"]

EVANSON = (
    "Evanson, Lavrov, Kharitonov, Lu & Kozlov, Biomimetic computations improve neural network "
    "robustness (Flexible Layer)"
)

ThresholdMode = Literal["learned", "uniform", "random", "conv", "pool"]


# -- the constraint ---------------------------------------------------------------------------
class FlexibleLayerParams(PluginParams):
    threshold: ThresholdMode = Field(
        default="learned",
        description="learned (per-unit, trained, no weight decay) | uniform (fixed init value) | "
        "random (0/1, p=1/2, redrawn every forward pass) | conv (T=-inf: the paper's baseline) | "
        "pool (T=+inf).",
    )
    init: float = Field(
        default=0.5,
        allow_inf_nan=False,
        description="Initial learned threshold / the uniform threshold (paper Fig. 3: 0.1, 0.6; "
        "no value is given for learned thresholds).",
    )
    reverse: bool = Field(
        default=False,
        description="Max-pooling above the threshold, convolution below (Table 2's 'Standard "
        "Reverse Threshold'); no effect with threshold conv / pool.",
    )
    sharpness: float = Field(
        default=50.0, gt=0, le=1e6, description="Scaling factor s of Eq. 1 (paper: 50)."
    )
    layers: Literal["paper", "all"] | list[int] = Field(
        default="paper",
        description="Which Conv2d layers become Flexible Layers: 'paper' (the sites the model "
        "marks: vgg16_flex's 2nd conv, flexible_small_net's only conv), 'all', or 1-based "
        "indices among the model's Conv2d modules in definition order, e.g. [2].",
    )
    at_inference: bool = Field(
        default=True,
        description="Random thresholds keep changing at evaluation (paper: yes); false: the "
        "expected output (mean of T=0 and T=1).",
    )

    @field_validator("layers", mode="before")
    @classmethod
    def _one_index(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _indices(self) -> FlexibleLayerParams:
        if isinstance(self.layers, list):
            if not self.layers:
                raise ValueError("layers: give at least one conv index (1-based), or 'all'")
            if min(self.layers) < 1:
                raise ValueError("layers: conv indices are 1-based (the first Conv2d is 1)")
            if len(set(self.layers)) != len(self.layers):
                raise ValueError("layers: repeated index")
        return self


def _convs(module: nn.Module) -> list[tuple[nn.Module, str, nn.Conv2d]]:
    """(parent, attribute, conv) of every Conv2d not already inside a Flexible Layer."""
    from torch import nn

    from bioprior.plugins.flexible_layer.nn import FlexibleLayer

    found: list[tuple[nn.Module, str, nn.Conv2d]] = []

    def walk(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, FlexibleLayer):
                continue
            if isinstance(child, nn.Conv2d):
                found.append((parent, name, child))
            walk(child)

    walk(module)
    return found


class FlexibleLayerConstraint(Constraint):
    """Replace Conv2d layers by :class:`FlexibleLayer` s wrapping them (evanson Fig. 2)."""

    def _selected(
        self, module: nn.Module, geometry: InputGeometry
    ) -> list[tuple[nn.Module, str, nn.Conv2d]]:
        from bioprior.plugins.flexible_layer.nn import FLEXIBLE_SITE

        convs = _convs(module)
        name = geometry.model or type(module).__name__
        layers = self.params.layers
        if not convs:
            raise ConstraintError(f"flexible_layer: model {name!r} has no Conv2d layer")
        if layers == "all":
            return convs
        if layers == "paper":
            marked = [c for c in convs if getattr(c[2], FLEXIBLE_SITE, False)]
            if not marked:
                raise ConstraintError(
                    f"flexible_layer: model {name!r} marks no Flexible-Layer site of the paper; "
                    f"set layers to 'all' or to 1-based indices among its {len(convs)} Conv2d "
                    "layers, e.g. [2]"
                )
            return marked
        beyond = [i for i in layers if i > len(convs)]
        if beyond:
            raise ConstraintError(
                f"flexible_layer: layers {beyond} beyond the {len(convs)} Conv2d layers of "
                f"model {name!r} (indices are 1-based)"
            )
        return [convs[i - 1] for i in layers]

    def _input_sizes(
        self, module: nn.Module, convs: list[nn.Conv2d], geometry: InputGeometry
    ) -> list[Any]:
        """Each conv's input (H, W), from one forward pass on zeros (None when unknown)."""
        import torch

        from bioprior.plugin import capture

        channels, size = geometry.in_channels, geometry.input_size
        if self.params.threshold != "learned" or not (channels and size):
            return [None] * len(convs)
        was_training = module.training
        try:
            param = next(module.parameters(), None)
            device = param.device if param is not None else None
            x = torch.zeros(1, channels, size, size, device=device)
            module.eval()
            with torch.no_grad():
                inputs = capture(module, convs, x, what="input")
        except Exception as exc:
            raise ConstraintError(
                f"flexible_layer: cannot measure the conv input sizes of {type(module).__name__} "
                f"on a {channels}x{size}x{size} input: {exc}"
            ) from exc
        finally:
            module.train(was_training)
        return [None if t is None else tuple(t.shape[-2:]) for t in inputs]

    def apply(self, module: nn.Module, geometry: InputGeometry = UNKNOWN_GEOMETRY) -> nn.Module:
        from bioprior.plugins.flexible_layer.nn import FlexibleLayer

        selected = self._selected(module, geometry)
        sizes = self._input_sizes(module, [c for _, _, c in selected], geometry)
        p = self.params
        for (parent, name, conv), size in zip(selected, sizes):
            layer = FlexibleLayer(
                conv,
                threshold=p.threshold,
                init=p.init,
                reverse=p.reverse,
                sharpness=p.sharpness,
                input_size=size,
                at_inference=p.at_inference,
            )
            setattr(parent, name, layer)
        return module


@hookimpl
def register_constraints(register):
    register(
        name="flexible_layer",
        factory=FlexibleLayerConstraint,
        params=FlexibleLayerParams,
        version="1",
        citation=EVANSON,
        description="Conv and max-pool in parallel, mixed per unit by a threshold (Eq. 1, s=50); "
        "learned | uniform | random | conv (baseline) | pool thresholds, reverse variant.",
        # members share the threshold mode: a learned threshold is a parameter, a uniform one a
        # buffer, conv / pool have none, so modes differ in structure (engine.batched.structure)
        extra={"batch": []},
    )
