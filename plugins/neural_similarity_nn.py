"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.neural_similarity.nn`. Import from
:mod:`bioprior.plugins.neural_similarity.nn`; plugin-facing names from :mod:`bioprior.plugin`."""

import warnings

from bioprior.plugins.neural_similarity import nn as _moved
from bioprior.plugins.neural_similarity.nn import *

warnings.warn(
    f"Importing from {__name__} is deprecated, please import from bioprior.plugins.neural_similarity.nn",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):  # the moved module's other names, private ones included
    return getattr(_moved, name)
