"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.flexible_layer.nn`. Import from
:mod:`bioprior.plugins.flexible_layer.nn`; plugin-facing names from :mod:`bioprior.plugin`."""

from bioprior._moved import moved
from bioprior.plugins.flexible_layer.nn import *

__getattr__ = moved(
    __name__, "bioprior.plugins.flexible_layer.nn", use="bioprior.plugins.flexible_layer.nn"
)
