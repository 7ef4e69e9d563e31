"""Any timm architecture as a model, by name: ``timm:<architecture>`` (Wightman, PyTorch Image
Models).

The family entry ``timm`` resolves ``timm:resnet18`` to a model entry whose parameter schema
is validated against timm itself: the architecture must exist, and ``kwargs`` must be accepted
by its constructor (checked by building it on the ``meta`` device, which allocates nothing).
Weights are never downloaded: a model starts from its seeded initialization, or from a
``.safetensors`` file (``pretrained_file``), loaded without unpickling. The entry's version
carries timm's version, so results are keyed by it.

    bioprior plugins 'timm:resnet1*'          # list architectures
    model: {name: "timm:resnet18", params: {kwargs: {drop_path_rate: 0.05}}}
"""

from __future__ import annotations

import difflib
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from pydantic import Field, create_model, field_validator, model_validator

from bioprior.plugin import ImageModelParams, PluginEntry, UnknownPluginError, hookimpl

TIMM = "Wightman (2019), PyTorch Image Models (timm), https://github.com/huggingface/pytorch-image-models"

# A model built without a dataset (``create_model``) and the validation build get this geometry.
DEFAULT_GEOMETRY = {"in_channels": 3, "num_classes": 10, "input_size": 32}


class TimmParams(ImageModelParams):
    """Parameters of every ``timm:<architecture>`` model."""

    drop_rate: float = Field(
        default=0.0, ge=0, lt=1, description="Dropout before the classifier (timm drop_rate)."
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Further keyword arguments of timm.create_model for this architecture "
        "(e.g. drop_path_rate); checked against the architecture's constructor.",
    )
    pretrained_file: str | None = Field(
        json_schema_extra={"file": "safetensors"},
        default=None,
        description="A .safetensors state dict to start from (never downloaded, never "
        "unpickled); the classifier is kept from the file only if its shape matches.",
    )

    @field_validator("pretrained_file")
    @classmethod
    def _safetensors_file(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = Path(value).expanduser()
        if path.suffix != ".safetensors":
            raise ValueError(f"{value}: weights must be a .safetensors file")
        if not path.is_file():
            raise ValueError(f"{value}: no such file")
        return str(path)


def _timm():
    """timm, imported after the torchvision shim (timm imports torchvision)."""
    from bioprior.plugin import ensure_torchvision

    ensure_torchvision()
    import timm

    return timm


@lru_cache(maxsize=1)
def architectures() -> tuple[str, ...]:
    """Every architecture timm can build."""
    return tuple(_timm().list_models())


def _create_kwargs(architecture: str, params: TimmParams) -> dict[str, Any]:
    timm = _timm()

    geometry = params.geometry(DEFAULT_GEOMETRY)
    kwargs: dict[str, Any] = {
        "num_classes": geometry["num_classes"],
        "in_chans": geometry["in_channels"],
        "drop_rate": params.drop_rate,
    }
    cfg = timm.models.get_pretrained_cfg(architecture)
    if cfg is not None and getattr(cfg, "fixed_input_size", False):
        kwargs["img_size"] = geometry["input_size"]  # ViT-like: the patch grid follows the input
    return {**kwargs, **params.kwargs}


def build(architecture: str, params: TimmParams):
    """The timm model, seeded by the caller; weights from ``pretrained_file`` if given."""
    timm = _timm()

    model = timm.create_model(
        architecture, pretrained=False, **_create_kwargs(architecture, params)
    )
    if params.pretrained_file:
        _load_weights(model, params.pretrained_file)
    return model


def _load_weights(model, file: str) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from bioprior.plugin import check_safetensors

    check_safetensors(file)  # bioprior.registry.submissions.files: header vs file size, by content
    try:
        state = load_file(file)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{file}: not a readable safetensors file ({exc})") from None
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_ids = (
        {id(t) for t in classifier.state_dict(keep_vars=True).values()} if classifier else set()
    )
    head = {k for k, t in model.state_dict(keep_vars=True).items() if id(t) in head_ids}
    body_missing = [
        k
        for k in own
        if k not in usable and k not in head and not k.endswith("num_batches_tracked")
    ]
    if not usable or body_missing:
        raise ValueError(
            f"{file}: weights do not fit this architecture ({len(usable)} of {len(own)} tensors "
            f"match; missing or misshapen: {', '.join(body_missing[:3])}"
            f"{', ...' if len(body_missing) > 3 else ''})"
        )
    model.load_state_dict(usable, strict=False)


def _validated_params(architecture: str) -> type[TimmParams]:
    """A params schema for one architecture whose validation builds it on the meta device."""

    def check(self: TimmParams) -> TimmParams:
        import torch

        timm = _timm()

        try:
            with torch.device("meta"):
                timm.create_model(
                    architecture, pretrained=False, **_create_kwargs(architecture, self)
                )
        except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
            raise ValueError(f"timm:{architecture} rejects these parameters: {exc}") from None
        return self

    return create_model(
        f"Timm_{architecture}_Params",
        __base__=TimmParams,
        __validators__={"_buildable": model_validator(mode="after")(check)},
    )


def resolve(architecture: str, family: PluginEntry) -> PluginEntry:
    """The model entry ``timm:<architecture>`` (called by the registry)."""
    timm = _timm()

    name = f"timm:{architecture}"
    if architecture not in architectures():
        hint = ""
        if "." in architecture:
            hint = " (pretrained tags are not used; name the architecture and pass pretrained_file)"
        close = difflib.get_close_matches(architecture, architectures(), n=3, cutoff=0.6)
        err = UnknownPluginError("model", name, [f"timm:{c}" for c in close])
        err.args = (f"{err.args[0]}{hint}",)
        raise err
    return PluginEntry(
        name=name,
        kind="model",
        factory=partial(build, architecture),
        params=_validated_params(architecture),
        version=f"timm-{timm.__version__}",
        citation=TIMM,
        description=f"timm architecture {architecture!r}, seeded initialization.",
    )


def members() -> list[str]:
    return list(architectures())


@hookimpl
def register_models(register):
    register(
        name="timm",
        factory="bioprior.plugins.timm_models:build",
        params=TimmParams,
        version="1",
        citation=TIMM,
        description="Family: any timm architecture as `timm:<name>` "
        "(list them with `bioprior plugins 'timm:resnet*'`).",
        extra={
            "family": "bioprior.plugins.timm_models:resolve",
            "family_members": "bioprior.plugins.timm_models:members",
        },
    )
