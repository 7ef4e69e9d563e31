"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.datasets.image_folders`. Import from
:mod:`bioprior.plugins.datasets.image_folders`; plugin-facing names from :mod:`bioprior.plugin`."""

from bioprior._moved import moved
from bioprior.plugins.datasets.image_folders import *

__getattr__ = moved(
    __name__,
    "bioprior.plugins.datasets.image_folders",
    use="bioprior.plugins.datasets.image_folders",
)
