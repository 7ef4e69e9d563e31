"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.datasets.image_folders`. Import from
:mod:`bioprior.plugins.datasets.image_folders`; plugin-facing names from :mod:`bioprior.plugin`."""

import warnings

from bioprior.plugins.datasets import image_folders as _moved
from bioprior.plugins.datasets.image_folders import *

warnings.warn(
    f"Importing from {__name__} is deprecated, please import from bioprior.plugins.datasets.image_folders",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):  # the moved module's other names, private ones included
    return getattr(_moved, name)
