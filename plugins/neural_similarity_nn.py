"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.neural_similarity.nn`. Import from
:mod:`bioprior.plugins.neural_similarity.nn`; plugin-facing names from :mod:`bioprior.plugin`."""

from bioprior._moved import moved
from bioprior.plugins.neural_similarity.nn import *

__getattr__ = moved(
    __name__, "bioprior.plugins.neural_similarity.nn", use="bioprior.plugins.neural_similarity.nn"
)
