"""Old module paths kept working: each is a three-line shim that star-imports the new module and
sets its module ``__getattr__`` with :func:`moved` (timm's deprecated-module pattern).

Deprecated names live for at least one minor version (docs/plugin-api.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib import import_module
from typing import Any


def moved(old: str, new: str, use: str = "bioprior.plugin") -> Callable[[str], Any]:
    """Warn that module ``old`` is deprecated, naming ``use`` (the warning points at the line
    that imported ``old``), and return a module ``__getattr__`` that finds every other name of
    ``new``, private ones included."""
    warnings.warn(
        f"Importing from {old} is deprecated, please import from {use}",
        DeprecationWarning,
        stacklevel=3,  # past this function and the shim's module code, to the importing line
    )
    module = import_module(new)

    def __getattr__(name: str) -> Any:
        return getattr(module, name)

    return __getattr__
