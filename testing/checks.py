"""The checks, by kind. Every entry gets :data:`COMMON`; models, constraints, datasets,
neural data, benchmarks and attacks add their own (see the modules beside this one).

Each check takes a :class:`~bioprior.testing.subject.Subject` and raises
:class:`~bioprior.testing.subject.CheckFailed` with a message that says what to fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import benchmark_checks, constraint_checks, data_checks, model_checks
from .listing import probe
from .subject import CheckFailed, CheckSkipped, Subject

if TYPE_CHECKING:
    from bioprior.plugin import PluginEntry

CheckFunction = Callable[[Subject], None]


def params_documented(s: Subject) -> None:
    """Every parameter has a description; unknown keys are errors."""
    params = s.entry.params
    undocumented = [n for n, f in params.model_fields.items() if not f.description]
    if undocumented:
        raise CheckFailed(
            f"parameters without a description: {', '.join(undocumented)}; declare each as "
            "Field(default, description='...') (it is what `bioprior schema` shows users)"
        )
    if params.model_config.get("extra") != "forbid":
        raise CheckFailed(
            f"{params.__name__} accepts unknown keys: subclass "
            "bioprior.plugin.PluginParams (extra='forbid') so a misspelt parameter "
            "is an error, not silently ignored"
        )


def defaults_valid(s: Subject) -> None:
    """The schema validates with no parameters given (and with the kit's overrides)."""
    from pydantic import ValidationError

    for label, raw in (("no parameters", {}), (f"the check parameters {s.params}", s.params)):
        try:
            s.entry.params.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(map(str, err["loc"])) or "(root)"
            raise CheckFailed(
                f"params do not validate with {label}: {where}: {err['msg']}; give every field "
                "a default that passes its own constraints"
            ) from None


def json_schema_roundtrip(s: Subject) -> None:
    """The JSON Schema renders; the defaults survive a JSON round-trip unchanged."""
    params = s.entry.params
    try:
        schema = json.dumps(params.model_json_schema())
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(
            f"{params.__name__}.model_json_schema() fails ({exc}); use JSON-representable "
            "field types (numbers, strings, lists, nested PluginParams), not tensors or classes"
        ) from None
    for name, prop in json.loads(schema).get("properties", {}).items():
        if not prop.get("description"):
            raise CheckFailed(f"field {name!r} has no description in the JSON Schema")
    default = params()
    try:
        text = json.dumps(default.model_dump(mode="json"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"defaults are not JSON ({exc}); use finite JSON values") from None
    again = params.model_validate(json.loads(text))
    if again != default:
        changed = [n for n in params.model_fields if getattr(again, n) != getattr(default, n)]
        raise CheckFailed(
            f"defaults change after a JSON round-trip: {', '.join(changed)}; a submission "
            "written as YAML/JSON must mean what the defaults mean"
        )


def version_and_citation(s: Subject) -> None:
    """A version (part of every result key) and a citation are given."""
    if not str(s.entry.version).strip():
        raise CheckFailed("no version: register(..., version='1') and bump it when numbers change")
    if not s.entry.citation.strip():
        raise CheckFailed(
            "no citation: register(..., citation='Author et al. (year), Title') naming the paper "
            "or software this entry implements"
        )


def _probe(s: Subject):
    origin = s.registry.origin(s.entry.kind, s.entry.name)
    if origin is None or not origin.module:
        raise CheckSkipped("not loaded from an entry point")
    # every plugin module of the registry in one go (one subprocess when all behave)
    others = [
        o.module
        for o in s.registry.origins().values()
        if o.module and o.provider == origin.provider
    ]
    result = probe(origin.module, *sorted(set(others) - {origin.module}))[origin.module]
    if result.error:
        raise CheckFailed(f"entry-point module {origin.module} fails to import: {result.error}")
    return origin.module, result


def imports_without_torch(s: Subject) -> None:
    """Importing the entry-point module imports no torch / timm / torchvision / sklearn."""
    module, result = _probe(s)
    if result.import_heavy:
        raise CheckFailed(
            f"importing {module} imports {', '.join(result.import_heavy)}: keep the module the "
            "entry point names torch-free (schemas and hooks only); put nn.Modules in a "
            "sibling module and register factory='your_package.layers:build' (a lazy string)"
        )


def listing_fast(s: Subject) -> None:
    """Listing (each entry's summary and JSON Schema) stays torch-free."""
    module, result = _probe(s)
    if result.import_heavy:
        raise CheckFailed(f"importing {module} already imports {', '.join(result.import_heavy)}")
    if result.listing_heavy:
        raise CheckFailed(
            f"listing {module}'s entries imports {', '.join(result.listing_heavy)}: a register "
            "hook or a params schema imports it; import torch only inside factories"
        )


COMMON: list[tuple[str, CheckFunction]] = [
    ("params_documented", params_documented),
    ("defaults_valid", defaults_valid),
    ("json_schema_roundtrip", json_schema_roundtrip),
    ("version_and_citation", version_and_citation),
    ("imports_without_torch", imports_without_torch),
    ("listing_fast", listing_fast),
]


def checks_of_kind(entry: PluginEntry) -> list[tuple[str, CheckFunction]]:
    """The checks that apply to ``entry``: the common ones, then its kind's."""
    by_kind = {
        "model": model_checks.CHECKS,
        "constraint": constraint_checks.CHECKS,
        "dataset": data_checks.CHECKS,
        "neural_data": data_checks.NEURAL_CHECKS,
        "benchmark": benchmark_checks.CHECKS,
        "attack": benchmark_checks.ATTACK_CHECKS,
    }
    return COMMON + by_kind.get(entry.kind, [])
