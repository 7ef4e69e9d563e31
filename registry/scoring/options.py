"""How ``bioprior score`` runs its steps: the executor options, checked, turned into an executor.

- ``--executor local`` (default): in this process, claiming each step in the results database so
  that scorers sharing it never compute a step twice; with ``--isolate``, a limit, several GPUs
  or several CPU workers (``--workers``), each step runs in a process of its own (one at a time
  per GPU, per CPU worker).
- ``--executor ray [--ray-address HOST:PORT]``: steps as Ray tasks (a local Ray without address);
  ``--weights-transport object-store`` moves weights through Ray's object store where no path is
  shared by every node (see :mod:`weights_transport`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bioprior.registry.execution.scheduling import Limits, parse_size

EXECUTORS = ("local", "ray")


class ExecutionError(ValueError):
    """A bad executor option: which one, and what is wrong (one line, exit 2)."""

    def __init__(self, option: str, message: str):
        self.option, self.message = option, message
        super().__init__(f"{option}: {message}")


@dataclass
class ExecutionOptions:
    executor: str = "local"
    ray_address: str | None = None
    isolate: bool = False
    timeout_s: float | None = None
    memory: str | None = None
    retries: int | None = None
    lease_s: float = 60.0
    cpus_per_step: float = 1.0
    gpus_per_step: float | None = None
    connect_timeout_s: float = 5.0
    init_timeout_s: float = 60.0
    data_root: str | None = None  # --data-root (else $BIOPRIOR_DATA), for workers elsewhere
    weights_transport: str | None = None  # --weights-transport (Ray only; None: shared)
    workers: int | None = None  # --workers (local CPU only; None: auto)

    def check(self) -> Limits:
        """Raise :class:`ExecutionError` for a bad option; return the command line's limits."""
        if self.executor not in EXECUTORS:
            raise ExecutionError("--executor", f"must be local or ray (got {self.executor!r})")
        if self.ray_address is not None and self.executor != "ray":
            raise ExecutionError("--ray-address", "only with --executor ray")
        if self.ray_address is not None and not self.ray_address.strip():
            raise ExecutionError("--ray-address", "is empty")
        if self.weights_transport is not None:
            from bioprior.registry.store.weights import TRANSPORTS

            if self.weights_transport not in TRANSPORTS:
                raise ExecutionError(
                    "--weights-transport",
                    f"must be shared or object-store (got {self.weights_transport!r})",
                )
            if self.executor != "ray":
                raise ExecutionError("--weights-transport", "only with --executor ray")
        if self.workers is not None and self.workers > 1 and self.executor == "ray":
            raise ExecutionError(
                "--workers", "only with --executor local (Ray runs --cpus-per-step per task)"
            )
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ExecutionError(
                "--timeout", f"must be a positive number of seconds (got {self.timeout_s:g})"
            )
        if self.retries is not None and not 0 <= self.retries <= 10:
            raise ExecutionError("--retries", f"must be between 0 and 10 (got {self.retries})")
        if not self.lease_s > 0:
            raise ExecutionError("--lease", f"must be positive (got {self.lease_s:g})")
        if not self.cpus_per_step > 0:
            raise ExecutionError(
                "--cpus-per-step", f"must be positive (got {self.cpus_per_step:g})"
            )
        if self.gpus_per_step is not None and not self.gpus_per_step >= 0:
            raise ExecutionError("--gpus-per-step", f"must be >= 0 (got {self.gpus_per_step:g})")
        memory = None
        if self.memory is not None:
            try:
                memory = parse_size(self.memory)
            except ValueError as exc:
                raise ExecutionError("--memory-limit", str(exc)) from None
            if memory < 64 << 20:
                raise ExecutionError("--memory-limit", f"{self.memory} is below 64M: nothing runs")
        return Limits(self.timeout_s, memory, self.retries or 0)


def submission_limits(loaded: Sequence[Any]) -> dict[str, Limits]:
    """Each submission's ``limits:`` block as :class:`Limits` (validated by its schema)."""
    out = {}
    for sub in loaded:
        block = sub.submission.limits
        memory = parse_size(block.memory) if block.memory else None
        out[sub.submission.name] = Limits(block.timeout_s, memory, block.retries)
    return out


def _most_generous(limits: list[Limits]) -> Limits:
    """One step serving several submissions (a shared training) gets the most generous of their
    limits, so no submission's step is stopped before its own limit."""
    if not limits:
        return Limits()
    if len(limits) == 1:
        return limits[0]
    times = [lim.wall_time_s for lim in limits]
    memories = [lim.memory_bytes for lim in limits]
    return Limits(
        None if None in times else max(times),
        None if None in memories else max(memories),
        max(lim.retries for lim in limits),
    )


def limits_function(loaded: Sequence[Any], cli: Limits) -> Callable[[Any], Limits]:
    per_submission = submission_limits(loaded)

    def limits_for(step: Any) -> Limits:
        names = getattr(step, "submissions", None) or (getattr(step, "submission", None),)
        own = [per_submission[n] for n in names if n in per_submission]
        return _most_generous(own).merged(cli)

    return limits_for


def runs_in_process(options: ExecutionOptions, loaded: Sequence[Any], device: str) -> bool:
    """Whether ``score`` runs plugin code in this process (the local executor without isolation,
    limits or several GPUs). Otherwise nothing of a plugin may run in the driver: no estimate or
    batching calibration (a plugin that crashes must crash in its own process)."""
    if options.executor == "ray" or options.isolate:
        return False
    cli = options.check()
    limits = [cli, *submission_limits(loaded).values()]
    if any(lim.wall_time_s is not None or lim.memory_bytes is not None for lim in limits):
        return False
    from bioprior.registry.execution.isolated import local_devices

    try:
        return len(local_devices(device)) <= 1
    except ValueError:
        return True  # reported as a --device error by build_executor


@dataclass
class Execution:
    executor: Any
    claims: Any
    close: Callable[[], None]


def check_workers(options: ExecutionOptions, device: str) -> None:
    """Raise :class:`ExecutionError` for ``--workers N`` (N > 1) where the steps run on GPUs:
    a GPU runs one step at a time (checked before anything is opened or planned)."""
    from bioprior.registry.execution.isolated import local_devices

    if options.executor != "local" or options.workers is None or options.workers < 2:
        return
    if local_devices(device) != ["cpu"]:
        raise ExecutionError(
            "--workers", f"CPU workers only (--device {device} runs one step per GPU)"
        )


def describe_workers(choice: Any, workers: int, per_worker: int, fit: int | None) -> str:
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
    :func:`check_workers`: a GPU runs one step at a time).

    The count comes from ``fresh()``, the plan from scratch (:meth:`.Scorer.fresh`; planned only
    here, on a local CPU and without ``--workers N``), not from what is left to do: a step's
    thread count, and so its numbers on a CPU, must not depend on how far an earlier run got (a
    resumed run trains its last step as the whole run would have)."""
    from bioprior.registry.base.threads import cpu_workers
    from bioprior.registry.execution.isolated import local_devices

    if options.executor != "local":
        return 1, None
    if local_devices(device) != ["cpu"]:
        return 1, None
    if options.workers is not None:
        return options.workers, None
    steps = fresh().steps
    trains = [s for s in steps if s.kind == "train"]
    side_by_side = len(trains) or len(steps)
    fit = None
    if scorer is not None and trains and min(threads, side_by_side) > 1:
        from bioprior.registry.engine.estimate import workers_that_fit

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
    choice: Any,
    scorer: Any = None,
) -> WorkerPlan:
    """:func:`cpu_worker_count` for ``choice`` (a :class:`.threads.ThreadChoice`), with each
    worker's share of its threads and the line that describes them (the CLI's and the API's)."""
    workers, fit = cpu_worker_count(options, fresh, device, choice.threads, scorer)
    per_worker = max(1, choice.threads // workers)
    return WorkerPlan(workers, per_worker, describe_workers(choice, workers, per_worker, fit))


def build_executor(
    options: ExecutionOptions,
    loaded: Sequence[Any],
    db_path: Path,
    home: Path,
    device: str,
    on_skip: Callable[[Any], None] | None = None,
    gpu_count: Callable[[], int] | None = None,
    worker_class: type | None = None,
    on_message: Callable[[str], None] | None = None,
    cpu_workers: int = 1,
    worker_threads: int | None = None,
) -> Execution:
    """The executor for these options (Ray is connected here: an unreachable address raises
    :class:`ExecutionError` before anything runs). ``worker_class`` is what runs a step in another
    process: built there from :class:`WorkerSettings` (default :class:`StepWorker`). On a CPU,
    ``cpu_workers`` steps run at once, each in a process with ``worker_threads`` threads."""
    from bioprior.registry.engine.worker import StepWorker
    from bioprior.registry.execution.isolated import IsolatedExecutor, local_devices
    from bioprior.registry.execution.scheduling import ClaimingExecutor
    from bioprior.registry.planning.payloads import WorkerSettings
    from bioprior.registry.store.claims import Claims

    worker_class = worker_class or StepWorker

    cli = options.check()
    limits_for = limits_function(loaded, cli)
    any_limit = any(
        lim.wall_time_s is not None or lim.memory_bytes is not None
        for lim in [cli, *submission_limits(loaded).values()]
    )
    settings = WorkerSettings(
        home=str(home),
        device=device,
        data_root=options.data_root or os.environ.get("BIOPRIOR_DATA"),
    )
    claims = Claims(db_path, lease_s=options.lease_s, weights_dir=Path(home) / "weights")

    def close() -> None:
        claims.close()

    if options.executor == "ray":
        from bioprior.registry.execution.ray_executor import RayExecutor, RayUnavailable

        executor = RayExecutor(
            settings,
            options.ray_address,
            limits_for,
            num_cpus=options.cpus_per_step,
            num_gpus=options.gpus_per_step or 0.0,
            claims=claims,
            on_skip=on_skip,
            connect_timeout_s=options.connect_timeout_s,
            init_timeout_s=options.init_timeout_s,
            worker_class=worker_class,
            weights_transport=options.weights_transport or "shared",
            on_message=on_message,
        )
        try:
            executor.connect()
        except RayUnavailable as exc:
            claims.close()
            option, _, message = str(exc).partition(": ")
            if not option.startswith("--"):
                option, message = "--executor", str(exc)
            raise ExecutionError(option, message) from None

        def close() -> None:
            claims.close()
            executor.shutdown()

        gpus = executor.cluster_gpus()
        if device.startswith("cuda") and not gpus:  # the driver itself may have none
            close()
            raise ExecutionError(
                "--device", f"{device}: the Ray cluster has no GPU (use auto or cpu)"
            )
        if options.gpus_per_step is None and device != "cpu":  # a GPU per step where there are
            executor.num_gpus = 1.0 if gpus else 0.0
        if device.startswith("cuda") and not executor.num_gpus:
            close()
            raise ExecutionError("--gpus-per-step", f"0 with --device {device}: no task gets a GPU")
        if device != "cpu":
            # what the tasks get: Ray sets CUDA_VISIBLE_DEVICES per task, so a task's GPU is cuda
            executor.settings = settings.replace(device="cuda" if executor.num_gpus else "cpu")
        return Execution(executor, claims, close)
    try:
        devices = local_devices(device, gpu_count)
    except ValueError as exc:
        claims.close()
        raise ExecutionError("--device", str(exc).removeprefix("--device cuda: ")) from None
    threads = None
    if devices == ["cpu"] and cpu_workers > 1:
        devices, threads = ["cpu"] * cpu_workers, worker_threads
    if options.isolate or any_limit or len(devices) > 1:
        executor = IsolatedExecutor(
            limits_for,
            devices=devices,
            settings=settings,
            claims=claims,
            on_skip=on_skip,
            worker_class=worker_class,
            on_message=on_message,
            threads=threads,
        )
    else:
        executor = ClaimingExecutor(claims, on_skip=on_skip)
    return Execution(executor, claims, close)
