"""CPU workers: how many steps run at once on a CPU, the threads of each, and the threads part
of the plan line (the same for the CLI and the API)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bioprior.registry.base.threads import ThreadChoice, cpu_workers
from bioprior.registry.execution import isolated
from bioprior.registry.scoring.options import ExecutionOptions


def describe_workers(choice: ThreadChoice, workers: int, per_worker: int, fit: int | None) -> str:
    """The threads part of the plan line: the thread choice, then the CPU workers where there
    are several, and why there are not more where memory decided."""
    described = choice.describe()
    if workers > 1:
        described += f"; {workers} CPU workers x {per_worker} thread{'s' * (per_worker > 1)}"
    if fit is not None and workers == fit < choice.threads:
        described += f" (memory for {fit} training{'s' * (fit > 1)} at once)"
    return described


def cpu_worker_count(
    options: ExecutionOptions,
    fresh: Callable[[], Any],
    device: str,
    threads: int,
    scorer: Any = None,
) -> tuple[int, int | None]:
    """Steps run at once (:func:`.threads.cpu_workers`) and how many trainings fit in memory at
    once where that was measured (``scorer``: plugin code may run in this process). CPU workers
    only with the local executor on a CPU (callers refuse ``--workers N`` elsewhere first, with
    :func:`.options.check_workers`: a GPU runs one step at a time).

    The count comes from ``fresh()``, the plan from scratch (:meth:`.Scorer.fresh`; planned only
    here, on a local CPU and without ``--workers N``), not from what is left to do: a step's
    thread count, and so its numbers on a CPU, must not depend on how far an earlier run got (a
    resumed run trains its last step as the whole run would have)."""
    if options.executor != "local":
        return 1, None
    if isolated.local_devices(device) != ["cpu"]:
        return 1, None
    if options.workers is not None:
        return options.workers, None
    steps = fresh().steps
    trains = [s for s in steps if s.kind == "train"]
    side_by_side = len(trains) or len(steps)
    fit = None
    if scorer is not None and trains and min(threads, side_by_side) > 1:
        from bioprior.registry.engine.estimate import workers_that_fit  # lazy: imports torch

        try:
            fit = workers_that_fit(trains, scorer.service())
        except Exception:  # noqa: BLE001 - a step that cannot be built fails when it runs
            fit = None
    return cpu_workers(None, threads, side_by_side, fit), fit


@dataclass(frozen=True)
class WorkerPlan:
    """How a run's steps share the threads: ``workers`` at once, ``per_worker`` threads each, and
    the threads part of the plan line (``described``)."""

    workers: int
    per_worker: int
    described: str


def plan_workers(
    options: ExecutionOptions,
    fresh: Callable[[], Any],
    device: str,
    choice: ThreadChoice,
    scorer: Any = None,
) -> WorkerPlan:
    """:func:`cpu_worker_count` for ``choice``, with each worker's share of its threads and the
    line that describes them."""
    workers, fit = cpu_worker_count(options, fresh, device, choice.threads, scorer)
    per_worker = max(1, choice.threads // workers)
    return WorkerPlan(workers, per_worker, describe_workers(choice, workers, per_worker, fit))
