"""What a plugin registers: one :class:`PluginEntry` per model, constraint, dataset or benchmark."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: The kinds of plugin, written once: ``KINDS`` and the hook names (``hookspecs.HOOK_KINDS``)
#: derive from it.
Kind = Literal["model", "constraint", "dataset", "benchmark", "attack", "neural_data"]
KINDS: tuple[str, ...] = get_args(Kind)


class PluginParams(BaseModel):
    """Base class for plugin parameter schemas: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def load_attribute(path: str) -> Any:
    """``"package.module:attr.sub"`` -> the object (imports the module)."""
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class EntryError(ValueError):
    """An entry that cannot be registered (bad schema, bad kind, duplicate name)."""


@dataclass(frozen=True)
class PluginEntry:
    """One registered plugin.

    ``factory`` is a callable or a lazy ``"module:attribute"`` string, so that listing plugins
    never imports torch. ``version`` is bumped whenever the entry's numbers would change: it is
    part of every result key. ``provider`` / ``provider_version`` are stamped by the core.
    """

    name: str
    kind: Kind
    factory: Callable[..., Any] | str
    params: type[BaseModel] = PluginParams
    version: str = "1"
    citation: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    provider: str = ""
    provider_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise :class:`EntryError` unless the entry is well formed (checked at registration)."""
        if (
            not self.name
            or not self.name.replace("_", "").replace("-", "").replace(":", "").isalnum()
        ):
            raise EntryError(f"invalid plugin name {self.name!r}")
        if self.kind not in KINDS:
            raise EntryError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if not (isinstance(self.params, type) and issubclass(self.params, BaseModel)):
            raise EntryError(f"{self.name}: params must be a pydantic BaseModel subclass")
        if self.params.model_config.get("extra") != "forbid":
            raise EntryError(f"{self.name}: params schema must set extra='forbid'")
        undocumented = [n for n, f in self.params.model_fields.items() if not f.description]
        if undocumented:
            raise EntryError(f"{self.name}: params without Field(description=...): {undocumented}")
        try:
            self.params()
        except ValidationError as exc:
            raise EntryError(f"{self.name}: params schema has no valid defaults: {exc}") from None
        if not (callable(self.factory) or (isinstance(self.factory, str) and ":" in self.factory)):
            raise EntryError(f"{self.name}: factory must be callable or 'module:attribute'")

    def stamped(self, provider: str, provider_version: str) -> PluginEntry:
        return replace(self, provider=provider, provider_version=provider_version)

    def load_factory(self) -> Callable[..., Any]:
        """Resolve a lazy factory string (imports the implementing module).

        Implementations may import torchvision or timm, so the torchvision shim is put in place first.
        """
        from bioprior.registry.base.torchvision_compat import ensure_torchvision  # lazy: torch

        ensure_torchvision()
        if callable(self.factory):
            return self.factory
        return load_attribute(self.factory)

    def parse_params(self, params: dict[str, Any] | None, registry: Any = None) -> BaseModel:
        """Validate raw parameters against the entry's schema (raises pydantic ValidationError).

        ``registry`` is the validation context: parameters that name other plugins (e.g. a
        :class:`~bioprior.registry.contracts.neural_data.NeuralDataRef`) are checked against it."""
        context = {"registry": registry} if registry is not None else None
        return self.params.model_validate(params or {}, context=context)

    @property
    def requires_model_params(self) -> tuple[str, ...]:
        """Model parameters a constraint needs (checked at validation): its class's
        ``Constraint.requires_model_params``; a lazy ``"module:attr"`` factory states them in
        ``extra["requires_model_params"]`` instead (so that validating imports nothing)."""
        if isinstance(self.factory, type):
            return tuple(getattr(self.factory, "requires_model_params", ()))
        return tuple(self.extra.get("requires_model_params", ()))

    def build(self, params: dict[str, Any] | BaseModel | None = None, **kwargs: Any) -> Any:
        """Validate ``params`` and call the factory with the parsed model as first argument."""
        parsed = params if isinstance(params, BaseModel) else self.parse_params(params)
        return self.load_factory()(parsed, **kwargs)

    @property
    def identity(self) -> dict[str, str]:
        """What goes into content keys: name, kind and version (not the provider)."""
        return {"name": self.name, "kind": self.kind, "version": self.version}

    def summary(self) -> dict[str, Any]:
        """A JSON-able description, as ``bioprior plugins --json`` prints it."""
        return {
            "name": self.name,
            "kind": self.kind,
            "provider": self.provider,
            "provider_version": self.provider_version,
            "version": self.version,
            "description": self.description,
            "citation": self.citation,
            "params": {
                n: {
                    "type": _type_name(f.annotation),
                    "default": _jsonable(f.get_default(call_default_factory=True)),
                    "description": f.description,
                }
                for n, f in self.params.model_fields.items()
            },
            "error": None,
        }


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    return annotation.__name__ if isinstance(annotation, type) else text


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


class ImageModelParams(PluginParams):
    """Geometry every image model takes; None means "take it from the training dataset"."""

    in_channels: int | None = Field(
        default=None, ge=1, description="Input channels (None: the dataset's)."
    )
    num_classes: int | None = Field(
        default=None, ge=2, description="Output classes (None: the dataset's)."
    )
    input_size: int | None = Field(
        default=None, ge=4, le=1024, description="Input height = width in px (None: the dataset's)."
    )

    def geometry(self, defaults: dict[str, int]) -> dict[str, int]:
        """``in_channels``, ``num_classes`` and ``input_size``, each from ``defaults`` where None
        (a model built without a dataset, e.g. by ``create_model``)."""
        return {k: v if (v := getattr(self, k)) is not None else defaults[k] for k in defaults}
