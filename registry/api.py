"""The Python API: ``bioprior.score``, ``create_model``, ``list_plugins``, ``list_models``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .entries import ImageModelParams, PluginEntry
from .paths import default_db
from .plugins import get_registry
from .progress import Reporter
from .submission import LoadedSubmission, load_submission, validate_submission_dict

if TYPE_CHECKING:
    from torch import nn


def list_plugins(kind: str | None = None, pattern: str | None = None) -> list[str]:
    """Names of registered plugins, e.g. ``list_plugins("constraint")`` or ``("model", "small_*")``."""
    return [e.name for e in get_registry().list(kind, pattern)]


def list_models(pattern: str | None = None) -> list[str]:
    return list_plugins("model", pattern)


def create_model(name: str, **params: Any) -> nn.Module:
    """Build a registered model (unconstrained, untrained), timm-style: ``create_model("small_alexnet", width=0.5)``."""
    return get_registry().get("model", name).build(params)


def module_entry(module: nn.Module) -> PluginEntry:
    """An in-memory ``nn.Module`` as a model entry; its content hash is its version."""
    import copy

    from .hashing import content_hash

    state = {k: (tuple(v.shape), float(v.double().sum())) for k, v in module.state_dict().items()}
    return PluginEntry(
        name=f"module:{type(module).__name__}",
        kind="model",
        factory=lambda _params: copy.deepcopy(module),
        params=ImageModelParams,
        version=content_hash([repr(module), state]),
        provider="<in-memory>",
    )


def score(
    submission: str | Path | dict[str, Any] | nn.Module,
    *,
    benchmarks: Sequence[str | dict[str, Any]] | None = None,
    training: dict[str, Any] | None = None,
    constraints: Sequence[str | dict[str, Any]] | None = None,
    seeds: Sequence[int] = (0,),
    name: str | None = None,
    db: str | Path | None = None,
    device: str = "auto",
    reporter: Reporter | None = None,
) -> list[dict[str, Any]]:
    """Score a submission file, a submission dict, or an in-memory ``nn.Module``; return its rows.

    For a module, ``benchmarks`` and ``training`` (a recipe dict with ``dataset``) are required;
    ``constraints`` are applied to a copy of it. Results go to the store like any other submission.
    """
    from .scorer import Scorer
    from .store import ResultStore

    registry = get_registry()
    if isinstance(submission, (str, Path)):
        loaded = load_submission(submission, registry)
    elif isinstance(submission, dict):
        loaded = validate_submission_dict(submission, registry)
    else:
        if benchmarks is None or training is None:
            raise ValueError("scoring an nn.Module needs benchmarks=[...] and training={...}")
        entry = module_entry(submission)
        registry = registry.extended(entry)
        raw = {
            "name": name or f"module-{type(submission).__name__}",
            "model": {"name": entry.name},
            "constraints": list(constraints or []),
            "training": training,
            "seeds": list(seeds),
            "benchmarks": list(benchmarks),
        }
        loaded = validate_submission_dict(raw, registry)
    with ResultStore(db or default_db()) as store:
        scorer = Scorer(store, registry, device=device, reporter=reporter)
        _, summary = scorer.plan([loaded])
        scorer.run(summary)
        return store.rows(submission=loaded.submission.name)


__all__ = ["LoadedSubmission", "create_model", "list_models", "list_plugins", "score"]
