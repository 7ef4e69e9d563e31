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

from bioprior.registry.hooks.entries import KINDS

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


def hook_name(kind: str) -> str:
    """The hook through which entries of ``kind`` are registered (``register_models``, ...)."""
    return f"register_{kind}" if kind.endswith("_data") else f"register_{kind}s"


#: hook name -> kind, for every kind in ``entries.KINDS`` (each has a hookspec above)
HOOK_KINDS: dict[str, str] = {hook_name(kind): kind for kind in KINDS}
