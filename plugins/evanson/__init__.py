"""Models of evanson (Supporting information, "Network Definitions"): the CIFAR VGG16 and the
small Fashion-MNIST network, registered as ``vgg16_flex`` and ``flexible_small_net``.

They are the plain networks; the ``flexible_layer`` constraint (default placement ``"paper"``)
puts the Flexible Layer where the paper does. Implementations: :mod:`bioprior.plugins.evanson.nn`
(imported only when a model is built, so listing plugins never imports torch).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bioprior.plugin import ImageModelParams, hookimpl

EVANSON = (
    "Evanson, Lavrov, Kharitonov, Lu & Kozlov, Biomimetic computations improve neural network "
    "robustness (Supporting information: Network Definitions)"
)


class VGG16FlexParams(ImageModelParams):
    width: float = Field(
        default=1.0, gt=0, le=4, description="Multiplier on every layer's width (paper: 1)."
    )


class FlexibleSmallNetParams(ImageModelParams):
    width: float = Field(
        default=1.0,
        gt=0,
        le=4,
        description="Multiplier on the conv channels (12) and hidden units (120, 60) (paper: 1).",
    )
    activation: Literal["relu", "sigmoid", "none"] = Field(
        default="relu",
        description="Nonlinearity after the conv and the hidden linear layers (the paper's "
        "listing shows none; relu as in the PyTorch code it mirrors; none: the literal listing).",
    )


@hookimpl
def register_models(register):
    register(
        name="vgg16_flex",
        factory="bioprior.plugins.evanson.nn:VGG16Flex.from_params",
        params=VGG16FlexParams,
        version="1",
        citation=EVANSON,
        description="evanson's CIFAR VGG16 (BatchNorm, Dropout2d, 512-100-classes head); conv 2 "
        "(64->64, 3x3, no padding) is the Flexible-Layer site of the flexible_layer constraint.",
        extra={"batch": []},  # seeds (and learning rates) train as batched members
    )
    register(
        name="flexible_small_net",
        factory="bioprior.plugins.evanson.nn:FlexibleSmallNet.from_params",
        params=FlexibleSmallNetParams,
        version="1",
        citation=EVANSON,
        description="evanson's small FMNIST net: conv5x5(12) -> FC 120 -> 60 -> classes; its conv "
        "is the Flexible-Layer site of the flexible_layer constraint.",
        extra={"batch": []},  # seeds (and learning rates) train as batched members
    )
