"""``bioprior.plugin``: the one public module for plugin authors (stable; docs/plugin-api.md).

Everything a plugin needs is importable from here, and only what is listed in ``__all__`` is
public: a name's home inside ``bioprior.registry`` may move between releases, its name here
does not (a removal is announced by a ``DeprecationWarning`` for at least one minor version,
see docs/plugin-api.md). Besides these names, the public contract is the hook names
(``register_models``, ``register_constraints``, ``register_datasets``, ``register_benchmarks``,
``register_attacks``, ``register_neural_data``) and the entry-point group ``bioprior``::

    from bioprior.plugin import Constraint, PluginParams, hookimpl, hidden_activations

- registering: :func:`hookimpl`, :class:`PluginEntry`, :class:`PluginParams`,
  :class:`ImageModelParams`, :func:`load_attribute`, :func:`get_registry`, :class:`Registry`,
  :class:`UnknownPluginError`;
- constraints: :class:`Constraint`, :class:`ConstraintError`, :class:`InputGeometry`,
  :data:`UNKNOWN_GEOMETRY`;
- benchmarks: :class:`Benchmark`, :class:`BenchmarkResult`, :class:`BenchmarkContext`,
  :class:`Needs`, :class:`TrainingSpec`, :class:`Work`, :func:`seeded`,
  :class:`EvaluationJournal` (``ctx.journal``), :data:`NO_JOURNAL`;
- neural data: :class:`NeuralData`, :class:`NeuralDataRef`, :func:`load_neural_data`,
  :func:`evaluate_readout`, :func:`readouts`, :class:`NeuralReadout`;
- layers: :func:`hidden_activations`, :class:`HiddenActivation`, :data:`ACTIVATION_TYPES`,
  :func:`capture`, :func:`scaled`, :func:`model_geometry`, :func:`gabor_kernel`,
  :class:`LocalResponseNorm`, :data:`CIFAR10_GEOMETRY`;
- training objectives: :class:`TrainingObjective`, :func:`attach_objective`,
  :func:`exclude_from_weight_decay`, :class:`ObjectiveContext`, :class:`Batch`,
  :func:`objectives`;
- image data: :class:`ImageData`, :class:`DataUnavailable`, :func:`fit_images`,
  :func:`fit_data`, :func:`to_float`;
- files and folders: :func:`data_root`, :func:`home`, :func:`ensure_torchvision`,
  :func:`check_npz`, :func:`check_safetensors`;
- trial-by-trial results: :func:`pack_correct`, :func:`unpack_correct`,
  :func:`error_consistency`.

Importing this module imports nothing else: each name is imported when first used, so an
entry-point module that imports ``Constraint`` or ``hookimpl`` from here stays torch-free
(the layers, objectives, data and trainer helpers import torch when they are first touched).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bioprior.registry.base.paths import data_root, home
    from bioprior.registry.base.torchvision_compat import ensure_torchvision
    from bioprior.registry.contracts.benchmark import Benchmark, BenchmarkResult, Work
    from bioprior.registry.contracts.constraint import (
        UNKNOWN_GEOMETRY,
        Constraint,
        ConstraintError,
        InputGeometry,
    )
    from bioprior.registry.contracts.neural_data import (
        NeuralData,
        NeuralDataRef,
        load_neural_data,
    )
    from bioprior.registry.engine.context import BenchmarkContext
    from bioprior.registry.engine.journal import NO_JOURNAL, EvaluationJournal
    from bioprior.registry.engine.trainer import seeded
    from bioprior.registry.hooks.entries import (
        ImageModelParams,
        PluginEntry,
        PluginParams,
        load_attribute,
    )
    from bioprior.registry.hooks.loading import Registry, UnknownPluginError, get_registry
    from bioprior.registry.hooks.specs import hookimpl
    from bioprior.registry.planning.needs import Needs
    from bioprior.registry.planning.spec import TrainingSpec
    from bioprior.registry.submissions.files import check_npz, check_safetensors
    from bioprior.registry.toolkit.consistency import (
        error_consistency,
        pack_correct,
        unpack_correct,
    )
    from bioprior.registry.toolkit.data import (
        DataUnavailable,
        ImageData,
        fit_data,
        fit_images,
        to_float,
    )
    from bioprior.registry.toolkit.layers import (
        ACTIVATION_TYPES,
        CIFAR10_GEOMETRY,
        HiddenActivation,
        LocalResponseNorm,
        capture,
        gabor_kernel,
        hidden_activations,
        model_geometry,
        scaled,
    )
    from bioprior.registry.toolkit.neural_metrics import (
        NeuralReadout,
        evaluate_readout,
        readouts,
    )
    from bioprior.registry.toolkit.objective import (
        Batch,
        ObjectiveContext,
        TrainingObjective,
        attach_objective,
        exclude_from_weight_decay,
        objectives,
    )

_R = "bioprior.registry."
#: where each public name lives today (the module is imported on first use)
_HOMES: dict[str, tuple[str, ...]] = {
    _R + "hooks.specs": ("hookimpl",),
    _R + "hooks.entries": ("PluginEntry", "PluginParams", "ImageModelParams", "load_attribute"),
    _R + "hooks.loading": ("get_registry", "Registry", "UnknownPluginError"),
    _R + "contracts.constraint": (
        "Constraint",
        "ConstraintError",
        "InputGeometry",
        "UNKNOWN_GEOMETRY",
    ),
    _R + "contracts.benchmark": ("Benchmark", "BenchmarkResult", "Work"),
    _R + "contracts.neural_data": ("NeuralData", "NeuralDataRef", "load_neural_data"),
    _R + "planning.needs": ("Needs",),
    _R + "planning.spec": ("TrainingSpec",),
    _R + "engine.context": ("BenchmarkContext",),
    _R + "engine.journal": ("EvaluationJournal", "NO_JOURNAL"),
    _R + "engine.trainer": ("seeded",),
    _R + "toolkit.layers": (
        "hidden_activations",
        "HiddenActivation",
        "ACTIVATION_TYPES",
        "capture",
        "scaled",
        "model_geometry",
        "gabor_kernel",
        "LocalResponseNorm",
        "CIFAR10_GEOMETRY",
    ),
    _R + "toolkit.objective": (
        "TrainingObjective",
        "attach_objective",
        "exclude_from_weight_decay",
        "ObjectiveContext",
        "Batch",
        "objectives",
    ),
    _R + "toolkit.neural_metrics": ("evaluate_readout", "readouts", "NeuralReadout"),
    _R + "toolkit.data": ("ImageData", "DataUnavailable", "fit_images", "fit_data", "to_float"),
    _R + "toolkit.consistency": ("pack_correct", "unpack_correct", "error_consistency"),
    _R + "base.paths": ("data_root", "home"),
    _R + "base.torchvision_compat": ("ensure_torchvision",),
    _R + "submissions.files": ("check_npz", "check_safetensors"),
}
_NAMES: dict[str, str] = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "ACTIVATION_TYPES",
    "CIFAR10_GEOMETRY",
    "NO_JOURNAL",
    "UNKNOWN_GEOMETRY",
    "Batch",
    "Benchmark",
    "BenchmarkContext",
    "BenchmarkResult",
    "Constraint",
    "ConstraintError",
    "DataUnavailable",
    "EvaluationJournal",
    "HiddenActivation",
    "ImageData",
    "ImageModelParams",
    "InputGeometry",
    "LocalResponseNorm",
    "Needs",
    "NeuralData",
    "NeuralDataRef",
    "NeuralReadout",
    "ObjectiveContext",
    "PluginEntry",
    "PluginParams",
    "Registry",
    "TrainingObjective",
    "TrainingSpec",
    "UnknownPluginError",
    "Work",
    "attach_objective",
    "capture",
    "check_npz",
    "check_safetensors",
    "data_root",
    "ensure_torchvision",
    "error_consistency",
    "evaluate_readout",
    "exclude_from_weight_decay",
    "fit_data",
    "fit_images",
    "gabor_kernel",
    "get_registry",
    "hidden_activations",
    "home",
    "hookimpl",
    "load_attribute",
    "load_neural_data",
    "model_geometry",
    "objectives",
    "pack_correct",
    "readouts",
    "scaled",
    "seeded",
    "to_float",
    "unpack_correct",
]


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
