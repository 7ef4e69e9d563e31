"""Registers one model and one constraint with bioprior (no torch import at module level)."""

from __future__ import annotations

from pydantic import Field

from bioprior.plugin import UNKNOWN_GEOMETRY, Constraint, ImageModelParams, PluginParams, hookimpl


class LeNet5Params(ImageModelParams):
    width: float = Field(default=1.0, gt=0, le=8, description="Multiplier on the 6 / 16 conv filters.")


class SynapticFailureParams(PluginParams):
    p: float = Field(default=0.3, ge=0, lt=1, description="Probability that a hidden unit's output is not transmitted.")
    at_inference: bool = Field(default=False, description="Keep failures on at evaluation.")


class SynapticFailure(Constraint):
    """Stochastic transmission failure (Bernoulli, rescaled like dropout) after every hidden activation."""

    def apply(self, module, geometry=UNKNOWN_GEOMETRY):  # torch is imported here, not at the top
        from bioprior.plugin import hidden_activations

        from .layers import Failure

        for act in hidden_activations(module):
            act.post.append(Failure(self.params.p, self.params.at_inference))
        return module


@hookimpl
def register_models(register):
    register(name="lenet5", factory="bioprior_example.layers:build_lenet5", params=LeNet5Params,
             version="1", citation="LeCun, Bottou, Bengio & Haffner (1998)", description="LeNet-5 with ReLUs.")


@hookimpl
def register_constraints(register):
    register(name="synaptic_failure", factory=SynapticFailure, params=SynapticFailureParams, version="1",
             citation="Allen & Stevens (1994), An evaluation of causes for unreliability of synaptic transmission",
             description="Hidden units fail to transmit with probability p.")
