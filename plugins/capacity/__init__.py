"""Built-in constraints of tsvetkov2020 (Methods: internal noise, bottleneck, activation function)
plus the precision limit it proposes (Discussion). Applied in the order a submission lists them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from bioprior.plugin import (
    UNKNOWN_GEOMETRY,
    Constraint,
    ConstraintError,
    InputGeometry,
    PluginParams,
    hookimpl,
)

TSVETKOV2020 = "Tsvetkov, Malhotra & Bowers (2020), Adding biological constraints to deep neural networks reduces their capacity to learn unstructured data (CogSci)"


class InternalNoiseParams(PluginParams):
    sigma: float = Field(
        default=0.6,
        ge=0,
        le=10,
        description="Std of the Gaussian noise added after every hidden activation (paper: 0-1.2 for "
        "ReLU, 0-0.2 for sigmoid; 0.6 is the threshold above which random data is not learned).",
    )
    at_inference: bool = Field(
        default=False, description="Keep the noise on at evaluation (Keras: off)."
    )


class InternalNoise(Constraint):
    """Gaussian noise on the output of every hidden conv / linear activation, not the output layer."""

    def apply(self, module, geometry: InputGeometry = UNKNOWN_GEOMETRY):
        from bioprior.plugin import hidden_activations
        from bioprior.plugins.capacity.nn import GaussianNoise

        for act in hidden_activations(module):
            act.post.append(GaussianNoise(self.params.sigma, self.params.at_inference))
        return module


class BottleneckParams(PluginParams):
    width: int = Field(
        default=8,
        ge=1,
        description="Filters of the first conv layer (paper: 200 -> 8 "
        "for small-alexnet, 96 -> 2 for small-inception).",
    )


class Bottleneck(Constraint):
    """Narrow the first convolution (Lindsey et al. 2019's retinal bottleneck)."""

    requires_model_params = ("first_conv_width",)

    def configure(self, model_name: str, model_params: dict[str, Any]) -> dict[str, Any]:
        if "first_conv_width" not in model_params:
            raise ConstraintError(f"model {model_name!r} has no first_conv_width parameter")
        return {**model_params, "first_conv_width": self.params.width}


class ActivationParams(PluginParams):
    function: Literal["relu", "sigmoid", "tanh", "gelu", "elu", "silu", "softplus"] = Field(
        default="sigmoid", description="Nonlinearity of every hidden unit (paper: sigmoid vs ReLU)."
    )


class Activation(Constraint):
    """Replace every hidden nonlinearity."""

    def apply(self, module, geometry: InputGeometry = UNKNOWN_GEOMETRY):
        from bioprior.plugin import hidden_activations
        from bioprior.plugins.capacity.nn import ACTIVATIONS

        for act in hidden_activations(module):
            act.act = ACTIVATIONS[self.params.function]()
        return module


class PrecisionLimitParams(PluginParams):
    bits: int = Field(
        default=4, ge=1, le=16, description="Bits per hidden activation (2**bits levels)."
    )
    low: float = Field(default=0.0, description="Lowest representable activation.")
    high: float = Field(
        default=4.0, description="Highest representable activation (clipped above)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> PrecisionLimitParams:
        if self.high <= self.low:
            raise ValueError("high must be greater than low")
        return self


class PrecisionLimit(Constraint):
    """Round hidden activations to ``bits`` with a straight-through gradient."""

    def apply(self, module, geometry: InputGeometry = UNKNOWN_GEOMETRY):
        from bioprior.plugin import hidden_activations
        from bioprior.plugins.capacity.nn import Quantize

        for act in hidden_activations(module):
            act.post.append(Quantize(self.params.bits, self.params.low, self.params.high))
        return module


@hookimpl
def register_constraints(register):
    common = {"version": "1", "citation": TSVETKOV2020}
    register(
        name="internal_noise",
        factory=InternalNoise,
        params=InternalNoiseParams,
        **common,
        description="Additive Gaussian noise after every hidden activation.",
        extra={"batch": ["sigma"]},  # trainings differing in sigma batch together
    )
    register(
        name="bottleneck",
        factory=Bottleneck,
        params=BottleneckParams,
        **common,
        description="Narrow first conv layer.",
        extra={"batch": []},
    )
    register(
        name="activation",
        factory=Activation,
        params=ActivationParams,
        **common,
        description="Swap the hidden nonlinearity (relu | sigmoid | ...).",
        extra={"batch": []},
    )
    register(
        name="precision_limit",
        factory=PrecisionLimit,
        params=PrecisionLimitParams,
        **common,
        description="Quantized hidden activations, straight-through gradient (paper's future work).",
        extra={"batch": ["bits", "low", "high"]},
    )
