"""Where bioprior keeps things: ``BIOPRIOR_HOME`` (results, weights, caches) and ``BIOPRIOR_DATA``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_DATA_ROOT: ContextVar[Path | None] = ContextVar("bioprior_data_root", default=None)


def home() -> Path:
    """``$BIOPRIOR_HOME`` or ``~/.bioprior``: results.sqlite, weights/, caches."""
    return Path(os.environ.get("BIOPRIOR_HOME") or Path.home() / ".bioprior").expanduser()


def data_root(override: str | os.PathLike | None = None) -> Path:
    """``override`` (a dataset's ``root`` parameter) if given, else the root of the enclosing
    :func:`using_data_root` (``--data-root``), else ``$BIOPRIOR_DATA`` or ``$BIOPRIOR_HOME/data``:
    where torchvision datasets live."""
    if override:
        return Path(override).expanduser()
    if _DATA_ROOT.get() is not None:
        return _DATA_ROOT.get()
    env = os.environ.get("BIOPRIOR_DATA")
    return Path(env).expanduser() if env else home() / "data"


def default_db() -> Path:
    return home() / "results.sqlite"


def weights_dir() -> Path:
    return home() / "weights"


@contextmanager
def using_data_root(root: str | os.PathLike | None) -> Iterator[None]:
    """Datasets built inside the block load from ``root`` (``--data-root``; None: unchanged),
    without touching the process environment."""
    if root is None:
        yield
        return
    token = _DATA_ROOT.set(Path(root).expanduser())
    try:
        yield
    finally:
        _DATA_ROOT.reset(token)
