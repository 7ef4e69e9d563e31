"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.datasets.derivations`. Import from
:mod:`bioprior.plugins.datasets.derivations`; plugin-facing names from :mod:`bioprior.plugin`."""

from bioprior._moved import moved
from bioprior.plugins.datasets.derivations import *

__getattr__ = moved(
    __name__, "bioprior.plugins.datasets.derivations", use="bioprior.plugins.datasets.derivations"
)
