"""What ``score`` is asked to do, checked once, before anything is opened or planned.

:class:`ExecutionOptions` say how the steps run:

- ``--executor local`` (default): in this process, claiming each step in the results database so
  that scorers sharing it never compute a step twice; with ``--isolate``, a limit, several GPUs
  or several CPU workers (``--workers``), each step runs in a process of its own (one at a time
  per GPU, per CPU worker).
- ``--executor ray [--ray-address HOST:PORT]``: steps as Ray tasks (a local Ray without address);
  ``--weights-transport object-store`` moves weights through Ray's object store where no path is
  shared by every node (see :mod:`bioprior.registry.store.weights`).

:class:`ScoreOptions` hold them with the rest (device, threads, database, data root, batching,
dry run, verify) and how the front end runs (the CLI's defaults; :func:`bioprior.score` differs
where its documentation says).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from bioprior.registry.base import threads as thread_choice
from bioprior.registry.base.devices import check_device
from bioprior.registry.base.paths import default_db
from bioprior.registry.execution import isolated
from bioprior.registry.execution.scheduling import Limits, parse_size
from bioprior.registry.store.weights import TRANSPORTS

EXECUTORS = ("local", "ray")


class OptionError(ValueError):
    """A bad option: which one, and what is wrong (one line, exit 2)."""

    def __init__(self, option: str, message: str):
        self.option, self.message = option, message
        super().__init__(f"{option}: {message}")


class ExecutionError(OptionError):
    """A bad executor option (or a cluster that cannot run the steps as asked)."""


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


def check_workers(options: ExecutionOptions, device: str) -> None:
    """Raise :class:`ExecutionError` for ``--workers N`` (N > 1) where the steps run on GPUs:
    a GPU runs one step at a time (checked before anything is opened or planned)."""
    if options.executor != "local" or options.workers is None or options.workers < 2:
        return
    if isolated.local_devices(device) != ["cpu"]:
        raise ExecutionError(
            "--workers", f"CPU workers only (--device {device} runs one step per GPU)"
        )


@dataclass(frozen=True)
class ScoreOptions:
    """Everything one ``score`` run is asked, checked (build it with :meth:`parse`).

    The last three say how the front end runs; their defaults are the command line's, and
    :func:`bioprior.score` sets each the other way (as its documentation says):

    - ``restore_threads``: the thread choice holds for the run only, then the caller's torch
      thread count is restored (else it stays set, for the rest of the process);
    - ``estimate``: estimate each step before running it (shown by ``--dry-run`` and after the
      run, next to the actual times);
    - ``unclaimed_in_process``: one worker's steps run in this process as the scorer's default
      executor runs them (unclaimed, without limits, every epoch reported); only several CPU
      workers get an executor. Else the execution options decide: claimed in this process, or
      each in a process of its own where ``--isolate``, a limit or several GPUs ask for it.
    """

    device: str
    threads: thread_choice.ThreadChoice
    db: Path
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)
    data_root: Path | None = None
    batch: int | None = None  # --batch: most trainings batched into one model (None: auto)
    dry_run: bool = False
    verify: int | None = None  # --verify N
    restore_threads: bool = False
    estimate: bool = True
    unclaimed_in_process: bool = False

    @classmethod
    def parse(
        cls,
        *,
        device: str = "auto",
        threads: str | int | None = None,
        workers: str | int | None = None,
        db: str | Path | None = None,
        data_root: str | Path | None = None,
        execution: ExecutionOptions | None = None,
        **rest,
    ) -> ScoreOptions:
        """Check in the command line's order: ``--threads`` and ``--workers``
        (:class:`.threads.ThreadsError`), ``--data-root`` (:class:`OptionError`), ``--device``
        (:class:`.devices.DeviceError`, its message without the option), then the execution
        options and the workers against the device (:class:`ExecutionError`)."""
        choice = thread_choice.choose(threads)
        requested = thread_choice.parse(workers, "--workers")
        if data_root is not None and not Path(data_root).expanduser().is_dir():
            raise OptionError("--data-root", f"{data_root} is not a directory")
        execution = replace(
            execution or ExecutionOptions(),
            workers=requested,
            data_root=str(data_root) if data_root is not None else None,
        )
        device = check_device(device, here=execution.executor != "ray")
        execution.check()
        check_workers(execution, device)
        return cls(
            device=device,
            threads=choice,
            db=Path(db) if db is not None else default_db(),
            execution=execution,
            data_root=Path(data_root) if data_root is not None else None,
            **rest,
        )
