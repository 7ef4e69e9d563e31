"""Why a step failed, as one stored word (the ``error_class`` column; ``bioprior results`` shows it).

- ``timeout``: the step ran past its wall-time limit and was killed;
- ``crashed``: the step's process died from a signal (segfault, abort, killed);
- ``out_of_memory``: an allocation failed (host memory limit, CUDA out of memory);
- ``invalid_output``: the model returned NaN / infinite or wrong-shape logits;
- ``resource_error``: the machine ran out of something that is not memory, or an OS call
  failed (a full disk, too many open files, a file system gone read-only): retried, and a
  rerun resumes it once the resource is back;
- ``plugin_error``: the plugin raised any other exception;
- ``worker_lost``: a distributed worker (a Ray node) died mid-step, after the retries;
- ``dependency_failed``: a step it needs (its training) failed, so it did not run.
"""

from __future__ import annotations

import errno
import signal

CLASSES = (
    "timeout",
    "crashed",
    "out_of_memory",
    "invalid_output",
    "resource_error",
    "plugin_error",
    "worker_lost",
    "dependency_failed",
)
RETRYABLE = frozenset({"timeout", "crashed", "out_of_memory", "resource_error", "worker_lost"})


class InvalidOutput(ValueError):
    """The model's logits are not finite, or do not have the shape (batch, num_classes)."""


OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")
#: what the OS (or SQLite) says when a resource other than memory runs out
RESOURCE_MARKERS = (
    "no space left on device",
    "database or disk is full",
    "disk quota exceeded",
    "too many open files",
    "read-only file system",
    "input/output error",
)
RESOURCE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EMFILE", "ENFILE", "EROFS", "EIO", "EAGAIN", "ENOLCK")
    if hasattr(errno, name)
)


def classify_exception(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out_of_memory"
    if isinstance(exc, InvalidOutput):
        return "invalid_output"
    text = f"{type(exc).__name__} {exc}".lower()
    if "outofmemoryerror" in text or any(m in text for m in OOM_MARKERS):
        return "out_of_memory"
    if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
        return "resource_error"
    if any(m in text for m in RESOURCE_MARKERS):
        return "resource_error"
    return "plugin_error"


def classify_error_text(error: str | None) -> str:
    """The class of a failure known only by its one-line message (``Type: message [file:line]``)."""
    text = (error or "").lower()
    if text.startswith(("memoryerror", "outofmemoryerror")) or any(m in text for m in OOM_MARKERS):
        return "out_of_memory"
    if text.startswith("invalidoutput"):
        return "invalid_output"
    if any(m in text for m in RESOURCE_MARKERS):
        return "resource_error"
    return "plugin_error"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
