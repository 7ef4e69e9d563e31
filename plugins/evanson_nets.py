"""Deprecated since bioprior 0.2, removed no earlier than 0.3: this module moved to
:mod:`bioprior.plugins.evanson.nn`. Import from :mod:`bioprior.plugins.evanson.nn`; plugin-
facing names from :mod:`bioprior.plugin`."""

from bioprior._moved import moved
from bioprior.plugins.evanson.nn import *

__getattr__ = moved(__name__, "bioprior.plugins.evanson.nn", use="bioprior.plugins.evanson.nn")
