"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.datasets.sources`. Import from :mod:`bioprior.plugins.datasets.sources`;
plugin-facing names from :mod:`bioprior.plugin`."""

from bioprior._moved import moved
from bioprior.plugins.datasets.sources import *

__getattr__ = moved(
    __name__, "bioprior.plugins.datasets.sources", use="bioprior.plugins.datasets.sources"
)
