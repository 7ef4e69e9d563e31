"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.surrogates.nn`. Import from :mod:`bioprior.plugins.surrogates.nn`;
plugin-facing names from :mod:`bioprior.plugin`."""

from bioprior._moved import moved
from bioprior.plugins.surrogates.nn import *

__getattr__ = moved(
    __name__, "bioprior.plugins.surrogates.nn", use="bioprior.plugins.surrogates.nn"
)
