"""The in-process executor, and the protocol every executor implements.

An executor runs steps and yields outcomes as they finish; the planner never sees how. Steps
arrive in topological order; a step whose dependency failed is yielded as failed
(``error_class`` "dependency_failed") without running. Only the driver (the Scorer) writes the
database. :class:`LocalExecutor` runs in this process, one step at a time; the isolated and Ray
executors implement the same ``run``. The worker that runs a step is handed in: this layer never
imports the training engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from bioprior.registry.execution.scheduling import InProcessBackend, schedule
from bioprior.registry.planning.outcomes import Outcome, Worker


class Executor(Protocol):
    def run(self, steps: Sequence[Any], worker: Worker) -> Iterator[Outcome]: ...


class LocalExecutor:
    """In-process, sequential; a step that raises becomes a failed outcome and the rest go on.
    The order is :func:`~bioprior.registry.execution.scheduling.schedule`'s, like every
    executor's."""

    def run(self, steps: Sequence[Any], worker: Worker) -> Iterator[Outcome]:
        yield from schedule(steps, InProcessBackend(worker))
