"""Why a step failed, as one stored word (the ``error_class`` column; ``bioprior results`` shows it).

- ``timeout``: the step ran past its wall-time limit and was killed;
- ``crashed``: the step's process died from a signal (segfault, abort, killed);
- ``out_of_memory``: an allocation failed (host memory limit, CUDA out of memory);
- ``invalid_output``: the model returned NaN / infinite or wrong-shape logits;
- ``plugin_error``: the plugin raised any other exception;
- ``worker_lost``: a distributed worker (a Ray node) died mid-step, after the retries;
- ``dependency_failed``: a step it needs (its training) failed, so it did not run.
"""

from __future__ import annotations

import signal

CLASSES = (
    "timeout",
    "crashed",
    "out_of_memory",
    "invalid_output",
    "plugin_error",
    "worker_lost",
    "dependency_failed",
)
RETRYABLE = frozenset({"timeout", "crashed", "out_of_memory", "worker_lost"})


class InvalidOutput(ValueError):
    """The model's logits are not finite, or do not have the shape (batch, num_classes)."""


OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def classify_exception(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out_of_memory"
    if isinstance(exc, InvalidOutput):
        return "invalid_output"
    text = f"{type(exc).__name__} {exc}".lower()
    if "outofmemoryerror" in text or any(m in text for m in OOM_MARKERS):
        return "out_of_memory"
    return "plugin_error"


def classify_error_text(error: str | None) -> str:
    """The class of a failure known only by its one-line message (``Type: message [file:line]``)."""
    text = (error or "").lower()
    if text.startswith(("memoryerror", "outofmemoryerror")) or any(m in text for m in OOM_MARKERS):
        return "out_of_memory"
    if text.startswith("invalidoutput"):
        return "invalid_output"
    return "plugin_error"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
