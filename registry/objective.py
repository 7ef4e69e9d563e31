"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.registry.toolkit.objective`. Plugins import from :mod:`bioprior.plugin`
(docs/plugin-api.md)."""

from bioprior._moved import moved
from bioprior.registry.toolkit.objective import *

__getattr__ = moved(__name__, "bioprior.registry.toolkit.objective")
