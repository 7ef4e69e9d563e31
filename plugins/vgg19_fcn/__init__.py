"""safarani2021's network (Sec. 2 "Architecture", Fig. 1): VGG-19 with batch normalization after
every convolution and a fully convolutional classification head.

Features: torchvision's VGG-19 plan (``torchvision.models.vgg.cfgs["E"]``; 3x3 convs with
BatchNorm and ReLU, five 2x2 max-pools), initialized as torchvision's ``VGG`` does. Head, as the
paper and its code (``sinzlab/neural_cotraining``, ``create_vgg_readout(readout_type="conv")``):
three 1x1 convolutions 512 -> 4096 -> 4096 -> classes with ReLU and dropout 0.5 after the first
two, then a global max-pool (the softmax is in the cross-entropy loss). Being fully convolutional,
it takes any input size.

Inputs: the paper classifies grayscale Tiny ImageNet at 64 x 64 px. ``in_channels`` /
``input_size`` of :class:`~bioprior.plugin.ImageModelParams` default to the dataset's
(None); the safarani2021 submissions set ``in_channels: 1, input_size: 64``.

Layer names (``net.named_modules()``), used by ``neural_cotraining``'s ``layer`` parameter::

    features.conv{b}_{i}        block i of stage b (b = 1..5): Sequential(conv, bn, relu);
                                its output is the post-BN, post-ReLU map (``conv3_1`` is the
                                paper's conv-3-1, as the reference code's vgg.features[:17])
    features.conv{b}_{i}.conv   the raw convolution (also .bn, .relu)
    features.pool{b}            the max-pools
    classifier.fc6 / relu6 / drop6 / fc7 / relu7 / drop7 / fc8 / pool / flatten

Every hidden nonlinearity is its own ``nn.ReLU`` module (not in place), so constraints can wrap
them; the output conv ``fc8`` has none.

Deviations (documented):

* A grayscale input goes to a first conv with ``in_channels`` inputs; the reference code repeats
  the gray channel 3 times into a 3-input conv, which is the same function class.
* Max-pools use ``ceil_mode=True`` so that inputs below 32 px (16 px digits) keep a 1 x 1 map
  through the fifth pool; for even sizes down to 32 px this is torchvision's floor pooling.
* ``width`` multiplies every channel count (features and head; at least 1 channel) for cheap CPU
  runs; ``width: 1`` is the paper's network. ``first_conv_width`` lets the bottleneck constraint
  narrow conv1_1.
"""

from __future__ import annotations

from pydantic import Field

from bioprior.plugin import ImageModelParams, hookimpl

SAFARANI2021 = (
    "Safarani, Nix, Willeke, Cadena, Restivo, Denfield, Tolias & Sinz (2021), Towards robust "
    "vision by multi-task learning on monkey visual cortex (NeurIPS); Simonyan & Zisserman (2015)"
)

#: torchvision.models.vgg.cfgs["E"] (VGG-19): channels per conv, "M" a 2x2 max-pool
VGG19_PLAN: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip
HEAD_WIDTH = 4096

# A model built without a dataset gets the paper's geometry (grayscale 64 px, Tiny ImageNet).
DEFAULT_GEOMETRY = {"in_channels": 1, "num_classes": 200, "input_size": 64}


class VGG19FCNParams(ImageModelParams):
    width: float = Field(
        default=1.0,
        gt=0,
        le=4,
        description="Multiplier on every channel count (1: the paper's VGG-19; e.g. 0.125 for "
        "quick CPU runs).",
    )
    dropout: float = Field(
        default=0.5, ge=0, lt=1, description="Dropout after fc6 and fc7 of the head (paper: 0.5)."
    )
    first_conv_width: int | None = Field(
        default=None,
        ge=1,
        description="Filters of conv1_1 (None: 64 x width); the bottleneck constraint sets it.",
    )


@hookimpl
def register_models(register):
    register(
        name="vgg19_bn_fcn",
        factory="bioprior.plugins.vgg19_fcn.nn:build",
        params=VGG19FCNParams,
        version="1",
        citation=SAFARANI2021,
        description="VGG-19 with BatchNorm and a fully convolutional head (safarani2021 Fig. 1); "
        "layers named features.conv3_1 etc.",
    )
