"""bioprior: a registry for testing biologically constrained vision models.

The top level re-exports the user-facing API lazily, so ``import bioprior`` stays cheap
(torch is only imported when something is trained or built)::

    import bioprior
    bioprior.list_plugins("model")
    model = bioprior.create_model("small_alexnet", width=0.25)
    bioprior.score("submissions/quickstart.yaml")
    trained = bioprior.load_trained("submissions/quickstart.yaml", variant={"sigma": 0.6})
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

_API = {
    "score": "bioprior.registry.api",
    "create_model": "bioprior.registry.api",
    "list_plugins": "bioprior.registry.api",
    "list_models": "bioprior.registry.api",
    "load_trained": "bioprior.registry.api",
    "get_registry": "bioprior.registry.hooks.loading",
    "hookimpl": "bioprior.registry.hooks.specs",
    "PluginEntry": "bioprior.registry.hooks.entries",
}

__all__ = [
    "PluginEntry",
    "create_model",
    "get_registry",
    "hookimpl",
    "list_models",
    "list_plugins",
    "load_trained",
    "score",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'bioprior' has no attribute {name!r}")
