"""What running a step gives back: a :class:`JobOutcome` or :class:`TrainOutcome`, and the
helpers every executor uses to make one (``failed``, ``dependency_failed``).

A step (``Step`` below; :class:`~bioprior.registry.planning.steps.TrainStep` or
:class:`~bioprior.registry.planning.steps.EvaluateStep`) has a content ``key``, a ``kind``
("train" | "evaluate"), a one-line ``label`` and ``depends_on`` (keys of steps that must have
finished ok first).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from bioprior.registry.base.failures import classify_exception
from bioprior.registry.planning.jobs import Job
from bioprior.registry.planning.steps import EvaluateStep, TrainStep


class Step(Protocol):
    key: str
    kind: str  # "train" | "evaluate"
    label: str
    depends_on: tuple[str, ...]


@dataclass
class JobOutcome:
    """The outcome of an evaluation step (what the store writes)."""

    job: Job
    status: str  # "ok" | "failed"
    metrics: dict[str, Any] = field(default_factory=dict)
    score: float | None = None
    error: str | None = None
    error_class: str | None = None  # see failures.py: timeout, crashed, out_of_memory, ...
    started_at: str = ""
    finished_at: str = ""
    duration_s: float = 0.0
    device: str = ""
    weights_hash: str | None = None
    weights: dict[str, str] = field(default_factory=dict)  # every training key used -> its hash
    kind: str = "evaluate"
    threads: int | None = None  # torch's CPU threads where the step ran (a worker's, not ours)
    cpu_s: float | None = None  # CPU seconds the step's process spent on it, all threads
    denormals: str | None = None  # CPU: subnormal floats "flushed" | "kept" (base/denormals.py)
    resumed: dict[str, Any] | None = None  # what it recalled of an earlier run (engine/journal.py)

    @property
    def key(self) -> str:
        return self.job.key


@dataclass
class TrainOutcome:
    """The outcome of a training step: each member's weights hash, saved under its own key."""

    step: TrainStep
    status: str
    error: str | None = None
    error_class: str | None = None
    started_at: str = ""
    finished_at: str = ""
    duration_s: float = 0.0
    device: str = ""
    weights: dict[str, str] = field(default_factory=dict)  # training key -> weights hash
    kind: str = "train"

    @property
    def key(self) -> str:
        return self.step.key


Outcome = JobOutcome | TrainOutcome
Worker = Callable[[Any], Outcome]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _outcome(step: Any, **kw: Any) -> Outcome:
    if isinstance(step, TrainStep):
        return TrainOutcome(step, **kw)
    return JobOutcome(step.job if isinstance(step, EvaluateStep) else step, **kw)


def failed(step: Any, exc: BaseException, started: str, t0: float, device: str = "") -> Outcome:
    """An outcome for a step (or job) that raised: the error on one line, the last frame kept."""
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" [{frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno}]" if frame else ""
    message = " ".join(str(exc).split()) or type(exc).__name__
    return _outcome(
        step,
        status="failed",
        error=f"{type(exc).__name__}: {message}{where}",
        error_class=classify_exception(exc),
        started_at=started,
        finished_at=now(),
        duration_s=time.perf_counter() - t0,
        device=device,
    )


def dependency_failed(
    step: Any, errors: dict[str, str | None], error_class: str | None = None
) -> Outcome:
    """A step not run because steps it depends on failed (``errors``: their key -> error). Its
    class is the failed dependency's (the row says why: ``timeout``, ``crashed``, ...)."""
    stamp = now()
    why = "; ".join(f"{key}: {error}" if error else key for key, error in errors.items())
    return _outcome(
        step,
        status="failed",
        error=f"dependency failed: {why}",
        error_class=error_class or "dependency_failed",
        started_at=stamp,
        finished_at=stamp,
    )
