"""ResNet18 / ResNet34 (He et al. 2016) with the CIFAR stem, as li2019 trained them (Sec. 4.1:
ResNet18 on grayscale CIFAR-10, ResNet34 on grayscale CIFAR-100).

Built with timm (``timm.create_model("resnet18" | "resnet34", num_classes, in_chans)``, seeded
initialization, never pretrained), then the CIFAR stem: ``conv1`` becomes a 3x3 / stride-1 /
padding-1 convolution and the stem max-pool is removed, so a 32 px image reaches ``layer1`` at
32 px (the ImageNet stem, 7x7 / 2 + max-pool, would shrink it to 8 px).

li2019's grayscale setting is ``in_channels: 1`` (mice are not sensitive to the colours of
human vision, Sec. 2); ``None`` takes the training dataset's channels, so a grayscale dataset
(digits, MNIST) or ``in_channels: 1`` on CIFAR (converted with ITU-R 601 luma) both give it.
``width`` scales every stage's channels (64, 128, 256, 512) and the stem (timm's ``channels``;
the stem width goes through timm's deep-stem ``stem_width``, whose convolutions are then
replaced by the single CIFAR conv) to keep CPU runs cheap; 1.0 is the paper's network.
"""

from __future__ import annotations

from pydantic import Field

from bioprior.plugin import ImageModelParams, hookimpl

HE2016 = "He, Zhang, Ren & Sun (2016), Deep residual learning for image recognition (CVPR)"
LI2019 = (
    "Li et al. (2019), Learning from brains how to regularize machines (NeurIPS); "
    "built with timm (Wightman 2019)"
)
DEFAULT_GEOMETRY = {"in_channels": 3, "num_classes": 10, "input_size": 32}
STAGE_CHANNELS = (64, 128, 256, 512)


class ResNetCifarParams(ImageModelParams):
    width: float = Field(
        default=1.0,
        gt=0,
        le=4,
        description="Multiplier on the stem and stage channels (64, 128, 256, 512); 1 = ResNet.",
    )
    drop_rate: float = Field(
        default=0.0, ge=0, lt=1, description="Dropout before the classifier (timm drop_rate)."
    )


@hookimpl
def register_models(register):
    for name, blocks, use in (
        ("resnet18_cifar", "2-2-2-2", "grayscale CIFAR-10"),
        ("resnet34_cifar", "3-4-6-3", "grayscale CIFAR-100"),
    ):
        register(
            name=name,
            factory=f"bioprior.plugins.resnet_cifar.nn:{name}",
            params=ResNetCifarParams,
            version="1",
            citation=f"{HE2016}; {LI2019}",
            description=f"timm ResNet ({blocks} basic blocks) with the CIFAR stem: conv 3x3/1, "
            f"no max-pool (li2019: {use}).",
        )
