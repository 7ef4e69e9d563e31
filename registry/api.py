"""The Python API: ``bioprior.score``, ``load_trained``, ``create_model``, ``list_plugins``,
``list_models``."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioprior.registry.base import threads as thread_choice
from bioprior.registry.base.hashing import content_hash
from bioprior.registry.base.paths import default_db, home, using_data_root
from bioprior.registry.base.progress import EventReporter, ProgressEvent, Reporter
from bioprior.registry.hooks.entries import ImageModelParams, PluginEntry
from bioprior.registry.hooks.loading import Registry, get_registry
from bioprior.registry.scoring.options import ExecutionError, ScoreOptions
from bioprior.registry.scoring.session import score_submissions
from bioprior.registry.scoring.trained import load_trained as load
from bioprior.registry.submissions.loading import (
    LoadedSubmission,
    load_submission,
    validate_submission_dict,
)

if TYPE_CHECKING:
    from torch import nn


def list_plugins(kind: str | None = None, pattern: str | None = None) -> list[str]:
    """Names of registered plugins, e.g. ``list_plugins("constraint")`` or ``("model", "small_*")``."""
    return [e.name for e in get_registry().list(kind, pattern)]


def list_models(pattern: str | None = None) -> list[str]:
    return list_plugins("model", pattern)


class InputMismatch(ValueError):
    """Images whose channels or size do not match the model's input geometry."""


def dataset_geometry(dataset: str) -> dict[str, int]:
    """``in_channels``, ``input_size`` and ``num_classes`` of a named dataset (a derivation's are
    its default source's): from the entry's declared ``geometry``, else from its data."""
    from bioprior.registry.toolkit.data import DataUnavailable  # lazy: torch

    entry = get_registry().get("dataset", dataset)
    if entry.extra.get("derivation"):
        return dataset_geometry(entry.extra["default_source"])
    if "geometry" in entry.extra:
        channels, size, classes = entry.extra["geometry"]
    else:
        try:
            data = entry.build({})
        except DataUnavailable as exc:
            raise ValueError(
                f"dataset={dataset!r}: its geometry needs its data ({exc}); pass in_channels, "
                "input_size and num_classes instead"
            ) from None
        channels, size, classes = data.channels, data.size, data.num_classes
    return {"in_channels": channels, "input_size": size, "num_classes": classes}


def create_model(name: str, *, dataset: str | None = None, **params: Any) -> nn.Module:
    """Build a registered model (unconstrained, untrained), timm-style:
    ``create_model("small_alexnet", width=0.5)``. ``dataset="digits"`` takes the input geometry
    (channels, size, classes) from a named dataset; explicit params win. Feeding the model images
    of other channels or size raises :class:`InputMismatch` saying how to build it instead."""
    entry = get_registry().get("model", name)
    if dataset is not None:
        fields = entry.params.model_fields
        for key, value in dataset_geometry(dataset).items():
            if key in fields and params.get(key) is None:
                params[key] = value
    model = entry.build(params)
    channels = (
        params.get("in_channels")
        or getattr(model, "in_channels", None)  # a model that knows its input says so
        or _first_conv_channels(model)
    )
    if isinstance(channels, int) and channels > 0:
        model.register_forward_pre_hook(ChannelCheck(name, channels))
    return model


def _first_conv_channels(model: nn.Module) -> int | None:
    from torch import nn

    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else None


class ChannelCheck:
    """A forward pre-hook: images of other channels than the model was built for raise
    :class:`InputMismatch` saying how to build it (a class, so the model still pickles)."""

    def __init__(self, name: str, channels: int):
        self.name, self.channels = name, channels

    def __call__(self, module, args) -> None:
        x = args[0] if args else None
        if getattr(x, "ndim", 0) == 4 and int(x.shape[1]) != self.channels:
            got = int(x.shape[1])
            raise InputMismatch(
                f"{self.name} was built for {self.channels}-channel images but got {got}-channel "
                f"ones (shape {tuple(x.shape)}); build it for the data, e.g. "
                f"create_model({self.name!r}, dataset='digits'), or pass in_channels={got}"
            )


def module_entry(module: nn.Module) -> PluginEntry:
    """An in-memory ``nn.Module`` as a model entry; its content hash is its version."""
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
    threads: int | str | None = None,
    data_root: str | Path | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    reporter: Reporter | None = None,
    workers: int | str | None = None,
) -> list[dict[str, Any]]:
    """Score a submission file, a submission dict, or an in-memory ``nn.Module``; return its rows.

    For a module, ``benchmarks`` and ``training`` (a recipe dict with ``dataset``) are required;
    ``constraints`` are applied to a copy of it. Results go to the store like any other submission.

    Silent by default: progress goes to the ``bioprior.progress`` logger (INFO, epochs at DEBUG)
    and, if given, to ``progress`` (called with each :class:`ProgressEvent`; ``print`` works).
    ``threads`` as ``--threads`` (default: chosen from the usable cores and the load; the
    caller's torch thread count is restored after); ``data_root`` as ``--data-root``.

    ``workers`` as ``--workers`` (default: as many as pay): on a CPU, steps that can run side by
    side run at once in child processes, each with its share of the threads, to the numbers
    ``bioprior score`` gives. A child's trainings are announced when they start and end
    (``message`` events), not epoch by epoch; ``workers=1`` trains in this process, with every
    epoch reported. An in-memory ``nn.Module`` always trains in this process.
    """
    in_memory = not isinstance(submission, (str, Path, dict))
    requested = thread_choice.parse(workers, "workers")
    if in_memory and requested is not None and requested > 1:
        raise ValueError(f"workers={workers!r}: an in-memory nn.Module trains in this process")
    db_path = Path(db) if db is not None else default_db()
    side_by_side = not in_memory and str(db_path) != ":memory:"
    try:
        options = ScoreOptions.parse(
            device=device,
            threads=threads,
            workers=requested if side_by_side else 1,
            db=db_path,
            data_root=data_root,
            restore_threads=True,  # the caller's torch settings are left as they were
            estimate=False,  # nothing prints them
            unclaimed_in_process=True,  # workers=1: in this process, every epoch reported
        )
    except ExecutionError:  # --workers N where the steps run on a GPU
        raise ValueError(
            f"workers={workers!r}: CPU workers only (device={device!r} runs one step per GPU)"
        ) from None
    registry, loaded = _load(submission, benchmarks, training, constraints, seeds, name)
    result = score_submissions([loaded], options, reporter or EventReporter(progress), registry)
    return result.rows


def load_trained(
    submission: str | Path | dict[str, Any],
    *,
    seed: int = 0,
    variant: dict[str, Any] | None = None,
    db: str | Path | None = None,
    device: str = "cpu",
    data_root: str | Path | None = None,
) -> nn.Module:
    """The trained model of one variant and seed of a scored submission (RobustBench's
    ``load_model``, for bioprior's own trainings): its weights from ``$BIOPRIOR_HOME/weights``,
    trusted only where they match their own hash and the hashes the results database (``db``)
    recorded for them. In evaluation mode, taking images in [0, 1] as the benchmarks give them.

    ``variant``: sweep values it must have, each by its path or the path's last part, e.g.
    ``load_trained("submissions/evanson-table2-fmnist.yaml", seed=1, variant={"threshold":
    "learned", "reverse": True})``. Nothing is trained: a training no run has finished raises
    :class:`~bioprior.registry.scoring.trained.NotTrained` (a ``LookupError``), an unknown
    seed or a variant that matches none or several a ``LookupError``, weights that may not be
    trusted a ``ValueError``; each message names the submission or file and the field."""
    registry, loaded = _load(submission, None, None, None, (0,), None)
    db_path = Path(db) if db is not None else default_db()
    with using_data_root(data_root):
        return load(
            loaded, registry, seed=seed, variant=variant, home=home(), db=db_path, device=device
        )


def _load(
    submission: str | Path | dict[str, Any] | nn.Module,
    benchmarks: Sequence[str | dict[str, Any]] | None,
    training: dict[str, Any] | None,
    constraints: Sequence[str | dict[str, Any]] | None,
    seeds: Sequence[int],
    name: str | None,
) -> tuple[Registry, LoadedSubmission]:
    """The submission, checked, and the registry it is checked against (a module's: extended
    with the module as a model entry)."""
    registry = get_registry()
    if isinstance(submission, (str, Path)):
        return registry, load_submission(submission, registry)
    if isinstance(submission, dict):
        return registry, validate_submission_dict(submission, registry)
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
    return registry, validate_submission_dict(raw, registry)


__all__ = [
    "InputMismatch",
    "LoadedSubmission",
    "create_model",
    "dataset_geometry",
    "list_models",
    "list_plugins",
    "load_trained",
    "score",
]
