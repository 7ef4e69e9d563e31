"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.capacity`. Import from :mod:`bioprior.plugins.capacity`; plugin-facing
names from :mod:`bioprior.plugin`."""

from bioprior._moved import moved
from bioprior.plugins.capacity import *

__getattr__ = moved(__name__, "bioprior.plugins.capacity", use="bioprior.plugins.capacity")
