"""The in-process executor, and the protocol every executor implements.

An executor runs steps and yields outcomes as they finish; the planner never sees how. Steps
arrive in topological order; a step whose dependency failed is yielded as failed
(``error_class`` "dependency_failed") without running. Only the driver (the Scorer) writes the
database. :class:`LocalExecutor` runs in this process, one step at a time; the isolated and Ray
executors implement the same ``run``. The worker that runs a step is handed in: this layer never
imports the training engine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from bioprior.registry.planning.outcomes import Outcome, Worker, dependency_failed, failed, now


class Executor(Protocol):
    def run(self, steps: Sequence[Any], worker: Worker) -> Iterator[Outcome]: ...


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
