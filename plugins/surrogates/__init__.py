"""Surrogate models for black-box attacks: evanson's "Conv2D model" (Supplementary Information,
Network Definitions), the network the black-box PGD of Table 3 is computed on."""

from __future__ import annotations

from pydantic import Field

from bioprior.plugin import ImageModelParams, hookimpl

EVANSON = (
    "Evanson et al., flexible layer (Supplementary: 'Conv2D model', after Zhang et al. 2019 "
    "TRADES / Yu's code)"
)


class CWConv2dParams(ImageModelParams):
    width: float = Field(
        default=1.0, gt=0, le=4, description="Multiplier on every layer's width (paper: 1)."
    )


@hookimpl
def register_models(register):
    register(
        name="cw_conv2d",
        factory="bioprior.plugins.surrogates.nn:CWConv2d.from_params",
        params=CWConv2dParams,
        version="1",
        citation=EVANSON,
        description="conv3x3 64-64-pool-128-128-pool, FC 256-classes (evanson's Conv2D model).",
    )
