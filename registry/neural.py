"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.registry.contracts.neural_data`. Plugins import from :mod:`bioprior.plugin`
(docs/plugin-api.md)."""

import warnings

from bioprior.registry.contracts import neural_data as _moved
from bioprior.registry.contracts.neural_data import *

warnings.warn(
    f"Importing from {__name__} is deprecated, please import from bioprior.plugin",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):  # the moved module's other names, private ones included
    return getattr(_moved, name)
