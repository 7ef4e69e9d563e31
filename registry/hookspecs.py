"""Hook specifications: every plugin (built-in or third party) provides entries through these.

Modelled on simonw/llm: each hook receives a ``register`` callback, so the core records who
supplied what, refuses duplicates and validates each entry as it arrives::

    from bioprior import hookimpl, PluginEntry

    @hookimpl
    def register_models(register):
        register(PluginEntry(name="my_net", kind="model", factory="my_pkg.nets:build",
                             params=MyNetParams, version="1", citation="Me et al. 2026"))
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "bioprior"
ENTRY_POINT_GROUP = "bioprior"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]


@hookspec
def register_models(register: Register) -> None:
    """Register model architectures (kind ``model``)."""


@hookspec
def register_constraints(register: Register) -> None:
    """Register biological constraints (kind ``constraint``)."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets and dataset derivations (kind ``dataset``)."""


@hookspec
def register_benchmarks(register: Register) -> None:
    """Register benchmarks (kind ``benchmark``)."""


@hookspec
def register_attacks(register: Register) -> None:
    """Register adversarial attacks (kind ``attack``) used by the adversarial benchmark."""


@hookspec
def register_neural_data(register: Register) -> None:
    """Register neural datasets (kind ``neural_data``): stimuli with recorded (or, clearly
    labelled, synthetic) responses or a similarity matrix, for neural constraints."""


HOOK_KINDS: dict[str, str] = {
    "register_models": "model",
    "register_constraints": "constraint",
    "register_datasets": "dataset",
    "register_benchmarks": "benchmark",
    "register_attacks": "attack",
    "register_neural_data": "neural_data",
}
