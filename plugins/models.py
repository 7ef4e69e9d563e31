"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.zhang2017`. Import from :mod:`bioprior.plugins.zhang2017`; plugin-facing
names from :mod:`bioprior.plugin`."""

from bioprior._moved import moved
from bioprior.plugins.zhang2017 import *

__getattr__ = moved(__name__, "bioprior.plugins.zhang2017", use="bioprior.plugins.zhang2017")
