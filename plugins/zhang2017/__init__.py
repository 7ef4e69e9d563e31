"""Built-in models: the Zhang et al. (2017) CIFAR networks used by tsvetkov2020 (Methods)."""

from __future__ import annotations

from pydantic import Field

from bioprior.plugin import ImageModelParams, hookimpl

ZHANG2017 = "Zhang, Bengio, Hardt, Recht & Vinyals (2017), Understanding deep learning requires rethinking generalization"


class ZhangParams(ImageModelParams):
    width: float = Field(default=1.0, gt=0, le=4, description="Multiplier on every layer's width.")
    first_conv_width: int | None = Field(
        default=None,
        ge=1,
        description="Filters of the first conv (None: the paper's 200 / 96 x width); the bottleneck sets it.",
    )


class SmallAlexNetParams(ZhangParams):
    local_response_norm: bool = Field(
        default=True, description="LRN after each pooling (Zhang et al.)."
    )


class SmallInceptionParams(ZhangParams):
    pass


@hookimpl
def register_models(register):
    register(
        name="small_alexnet",
        factory="bioprior.plugins.zhang2017.nn:SmallAlexNet.from_params",
        params=SmallAlexNetParams,
        version="1",
        citation=ZHANG2017,
        description="conv5x5(200)-pool-LRN x2, FC 384-192-classes (tsvetkov2020 small-alexnet).",
        extra={"batch": []},  # trains batched with its sweep (registry.batched)
    )
    register(
        name="small_inception",
        factory="bioprior.plugins.zhang2017.nn:SmallInception.from_params",
        params=SmallInceptionParams,
        version="1",
        citation=ZHANG2017,
        description="Zhang et al.'s small Inception: conv3x3(96), 10 inception / 2 downsample modules.",
        extra={"batch": []},  # trains batched with its sweep (registry.batched)
    )
