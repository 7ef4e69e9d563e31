"""The executor of a ``score`` run, chosen from its options (one factory per ``--executor``).

Every executor is handed the same things (:class:`Handed`): the claims in the results database,
each step's limits, the settings a worker elsewhere is rebuilt from, the step worker class (the
engine's :class:`StepWorker`: the execution layer never imports the engine) and where notices go.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bioprior.registry.base.progress import Reporter
from bioprior.registry.engine.worker import StepWorker
from bioprior.registry.execution import isolated
from bioprior.registry.execution.isolated import IsolatedExecutor
from bioprior.registry.execution.ray_executor import RayExecutor, RayUnavailable
from bioprior.registry.execution.scheduling import ClaimingExecutor, Limits
from bioprior.registry.planning.payloads import WorkerSettings
from bioprior.registry.scoring.limits import has_limit, limits_function
from bioprior.registry.scoring.options import ExecutionError, ExecutionOptions
from bioprior.registry.scoring.workers import WorkerPlan
from bioprior.registry.store.claims import Claims


def runs_in_process(options: ExecutionOptions, loaded: Sequence[Any], device: str) -> bool:
    """Whether ``score`` runs plugin code in this process (the local executor without isolation,
    limits or several GPUs). Otherwise nothing of a plugin may run in the driver: no estimate or
    batching calibration (a plugin that crashes must crash in its own process)."""
    if options.executor == "ray" or options.isolate:
        return False
    if has_limit(loaded, options.check()):
        return False
    try:
        return len(isolated.local_devices(device)) <= 1
    except ValueError:
        return True  # reported as a --device error by build_executor


@dataclass(frozen=True)
class Handed:
    """What every executor of a run is handed."""

    claims: Claims
    limits_for: Callable[[Any], Limits]
    any_limit: bool
    settings: WorkerSettings
    worker_class: type
    on_skip: Callable[[Any], None]
    on_message: Callable[[str], None]


def _local(
    options: ExecutionOptions,
    device: str,
    handed: Handed,
    sharing: WorkerPlan | None,
    gpu_count: Callable[[], int] | None,
) -> Any:
    """One step at a time in this process, claimed; or each step in a process of its own (one
    at a time per GPU, per CPU worker) where ``--isolate``, a limit or several slots ask."""
    workers, threads = (sharing.workers, sharing.per_worker) if sharing else (1, None)
    try:
        devices, threads = isolated.device_slots(device, workers, threads, gpu_count)
    except ValueError as exc:
        raise ExecutionError("--device", str(exc).removeprefix("--device cuda: ")) from None
    if not (options.isolate or handed.any_limit or len(devices) > 1):
        return ClaimingExecutor(handed.claims, on_skip=handed.on_skip)
    return IsolatedExecutor(
        handed.limits_for,
        devices=devices,
        settings=handed.settings,
        claims=handed.claims,
        on_skip=handed.on_skip,
        worker_class=handed.worker_class,
        on_message=handed.on_message,
        threads=threads,
    )


def _ray(
    options: ExecutionOptions,
    device: str,
    handed: Handed,
    sharing: WorkerPlan | None,
    gpu_count: Callable[[], int] | None,
) -> Any:
    """Steps as Ray tasks, connected here: an unreachable cluster is bad input before anything
    runs (:class:`ExecutionError`)."""
    try:
        return RayExecutor.from_options(
            options,
            handed.settings,
            device,
            limits=handed.limits_for,
            claims=handed.claims,
            on_skip=handed.on_skip,
            worker_class=handed.worker_class,
            on_message=handed.on_message,
        )
    except RayUnavailable as exc:
        option, _, message = str(exc).partition(": ")
        if not option.startswith("--"):
            option, message = "--executor", str(exc)
        raise ExecutionError(option, message) from None


FACTORIES = {"local": _local, "ray": _ray}


@dataclass
class Execution:
    """The executor of a run and the claims it holds; :meth:`close` when the run is over."""

    executor: Any
    claims: Claims

    def close(self) -> None:
        self.claims.close()
        shutdown = getattr(self.executor, "shutdown", None)
        if shutdown is not None:  # Ray, where this run started it
            shutdown()


def build_executor(
    options: ExecutionOptions,
    loaded: Sequence[Any],
    device: str,
    *,
    db: Path,
    home: Path,
    reporter: Reporter,
    sharing: WorkerPlan | None = None,
    worker_class: type = StepWorker,
    gpu_count: Callable[[], int] | None = None,
) -> Execution:
    """The executor for these options, claiming steps in the results database at ``db``.
    ``worker_class`` is what runs a step in another process, built there from
    :class:`WorkerSettings`. On a CPU, ``sharing.workers`` steps run at once, each in a process
    with ``sharing.per_worker`` threads. ``gpu_count`` overrides the GPUs seen (tests)."""
    cli = options.check()

    def skipped(step: Any) -> None:
        reporter.message(f"  {step.label}: done by another scorer")

    claims = Claims(db, lease_s=options.lease_s, weights_dir=Path(home) / "weights")
    handed = Handed(
        claims=claims,
        limits_for=limits_function(loaded, cli),
        any_limit=has_limit(loaded, cli),
        settings=WorkerSettings(
            home=str(home),
            device=device,
            data_root=options.data_root or os.environ.get("BIOPRIOR_DATA"),
        ),
        worker_class=worker_class,
        on_skip=skipped,
        on_message=reporter.message,
    )
    try:
        executor = FACTORIES[options.executor](options, device, handed, sharing, gpu_count)
    except BaseException:
        claims.close()
        raise
    return Execution(executor, claims)
