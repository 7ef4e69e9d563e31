"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.hmax.nn`. Import from :mod:`bioprior.plugins.hmax.nn`; plugin-facing
names from :mod:`bioprior.plugin`."""

from bioprior._moved import moved
from bioprior.plugins.hmax.nn import *

__getattr__ = moved(__name__, "bioprior.plugins.hmax.nn", use="bioprior.plugins.hmax.nn")
