"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.capacity.nn`. Import from :mod:`bioprior.plugins.capacity.nn`; plugin-
facing names from :mod:`bioprior.plugin`."""

from bioprior._moved import moved
from bioprior.plugins.capacity.nn import *

__getattr__ = moved(__name__, "bioprior.plugins.capacity.nn", use="bioprior.plugins.capacity.nn")
