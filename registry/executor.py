"""Executors run jobs and yield outcomes as they finish; the planner never sees how.

:class:`LocalExecutor` runs in this process, one job at a time. A distributed executor (Ray,
isolated crash-safe workers) implements the same ``run`` and slots in without touching the planner.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .failures import classify_exception
from .planner import Job


@dataclass
class JobOutcome:
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


Worker = Callable[[Job], JobOutcome]


class Executor(Protocol):
    def run(self, jobs: Sequence[Job], worker: Worker) -> Iterator[JobOutcome]: ...


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def failed(job: Job, exc: BaseException, started: str, t0: float, device: str = "") -> JobOutcome:
    """An outcome for a job that raised: the error on one line, the traceback's last frame kept."""
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" [{frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno}]" if frame else ""
    message = " ".join(str(exc).split()) or type(exc).__name__
    return JobOutcome(
        job,
        "failed",
        error=f"{type(exc).__name__}: {message}{where}",
        error_class=classify_exception(exc),
        started_at=started,
        finished_at=now(),
        duration_s=time.perf_counter() - t0,
        device=device,
    )


class LocalExecutor:
    """In-process, sequential; a job that raises becomes a failed outcome and the rest go on."""

    def run(self, jobs: Sequence[Job], worker: Worker) -> Iterator[JobOutcome]:
        for job in jobs:
            started, t0 = now(), time.perf_counter()
            try:
                yield worker(job)
            except Exception as exc:  # noqa: BLE001 - a worker bug must not stop the others
                yield failed(job, exc, started, t0)
