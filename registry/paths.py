"""Where bioprior keeps things: ``BIOPRIOR_HOME`` (results, weights, caches) and ``BIOPRIOR_DATA``."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$BIOPRIOR_HOME`` or ``~/.bioprior``: results.sqlite, weights/, caches."""
    return Path(os.environ.get("BIOPRIOR_HOME") or Path.home() / ".bioprior").expanduser()


def data_root(override: str | os.PathLike | None = None) -> Path:
    """``override`` (a dataset's ``root`` parameter) if given, else ``$BIOPRIOR_DATA`` or
    ``$BIOPRIOR_HOME/data``: where torchvision datasets live."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("BIOPRIOR_DATA")
    return Path(env).expanduser() if env else home() / "data"


def default_db() -> Path:
    return home() / "results.sqlite"


def weights_dir() -> Path:
    return home() / "weights"
