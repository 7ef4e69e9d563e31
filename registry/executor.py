"""Executors run steps and yield outcomes as they finish; the planner never sees how.

A step (``Step`` below; :class:`~bioprior.registry.planner.TrainStep` or
:class:`~bioprior.registry.planner.EvaluateStep`) has a content ``key``, a ``kind`` ("train" |
"evaluate"), a one-line ``label`` and ``depends_on`` (keys of steps that must have finished ok
first). Steps arrive in topological order; a step whose dependency failed is yielded as failed
(``error_class`` "dependency_failed") without running. Only the driver (the Scorer) writes the
database. :class:`LocalExecutor` runs in this process, one step at a time; process-isolated and
Ray executors implement the same ``run`` (see CONTRACT.md).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .failures import classify_exception
from .planner import EvaluateStep, Job, TrainStep


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


class Executor(Protocol):
    def run(self, steps: Sequence[Any], worker: Worker) -> Iterator[Outcome]: ...


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


class LocalExecutor:
    """In-process, sequential; a step that raises becomes a failed outcome and the rest go on."""

    def run(self, steps: Sequence[Any], worker: Worker) -> Iterator[Outcome]:
        bad: dict[str, str | None] = {}  # failed step key -> its error
        bad_class: dict[str, str | None] = {}  # failed step key -> its error class
        for step in steps:
            missing = {k: bad[k] for k in getattr(step, "depends_on", ()) if k in bad}
            upstream = next((bad_class[k] for k in missing if bad_class.get(k)), None)
            if missing:
                outcome = dependency_failed(step, missing, upstream)
            else:
                started, t0 = now(), time.perf_counter()
                try:
                    outcome = worker(step)
                except Exception as exc:  # noqa: BLE001 - a worker bug must not stop the others
                    outcome = failed(step, exc, started, t0)
            if outcome.status != "ok":
                bad[step.key], bad_class[step.key] = outcome.error, outcome.error_class
            yield outcome
