"""Process isolation: each step in a child process of its own, with a wall-time and a memory limit.

A plugin that segfaults, hangs, leaks or allocates without bound takes down its own process, not
the sweep: the driver classifies what happened (see :mod:`failures`), stores it, and goes on.

- memory: ``resource.setrlimit(RLIMIT_AS)`` in the child on CPU (address space, what the kernel
  can refuse: an allocation past it raises ``MemoryError`` / torch's "can't allocate memory");
  on CUDA, whose driver reserves huge address ranges, ``RLIMIT_DATA`` (heap and private memory);
- wall time: the child is killed (SIGKILL) when it runs past its limit;
- devices: one slot per device (``cuda:0``, ``cuda:1``, ...), so a machine with several GPUs runs
  one step per GPU at once, each in its own process, without Ray; a CPU has one slot per worker
  (``--workers``, :func:`bioprior.registry.base.threads.cpu_workers`), each child with its share of
  the threads.

On Linux children are forked from the driver (they inherit its registry and the step; nothing is
pickled on the way in). With ``start_method="spawn"`` (or on CUDA, which cannot be forked once
initialised) the child rebuilds the worker from :class:`WorkerSettings` and the step from its
JSON payload. Either way the outcome comes back as a plain dict through a pipe.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import Any

from bioprior.registry.base import denormals
from bioprior.registry.base.failures import classify_exception, signal_name
from bioprior.registry.base.progress import (
    ForwardingReporter,
    is_forwarded_message,
    remote_training_line,
)
from bioprior.registry.execution.scheduling import Limits, schedule
from bioprior.registry.planning.outcomes import now
from bioprior.registry.planning.payloads import (
    WorkerSettings,
    failed_outcome,
    outcome_from_payload,
    outcome_payload,
    step_payload,
)
from bioprior.registry.store.weights import stored_history

#: how long a stopped scorer waits for its running steps to stop on SIGTERM (a training ends its
#: step and writes its checkpoint, which a rerun resumes) before SIGKILL
STOP_GRACE_S = 10.0

#: what a fork server imports once for all its children (torch's optimizers import torch._dynamo
#: on their first step; scikit-learn holds the digits)
FORKSERVER_PRELOAD = [
    "torch",
    "torch._dynamo",
    "sklearn.datasets",
    "bioprior.registry.engine.worker",
    "bioprior.registry.engine.runner",
]


def report_training(on_message, step, outcome, weights_dir: str | Path) -> None:
    """One line on the driver's console for a finished training that ran in another process (a
    Ray task, a child process), whose epoch lines that console never saw."""
    members = getattr(step, "members", ())
    if (
        on_message is None
        or outcome.status != "ok"
        or getattr(step, "kind", None) != "train"
        or not members
    ):
        return
    history = stored_history(weights_dir, members[0].key)  # a batch: its first member's
    on_message(remote_training_line(step.label, outcome.duration_s, outcome.device, history))


def local_devices(device: str = "auto", count: Callable[[], int] | None = None) -> list[str]:
    """The devices to run on, one worker each: every visible GPU for ``auto`` / ``cuda`` (one per
    GPU), else the one named (``cuda:1``, ``cpu``). ``count`` overrides the GPU count (tests)."""
    if device not in ("auto", "cuda"):
        return [device]
    if count is None:
        import torch

        count = torch.cuda.device_count if torch.cuda.is_available() else (lambda: 0)
    n = count()
    if n == 0:
        if device == "cuda":
            raise ValueError("--device cuda: no CUDA device is available (use auto or cpu)")
        return ["cpu"]
    return [f"cuda:{i}" for i in range(n)]


def device_slots(
    device: str,
    cpu_workers: int = 1,
    worker_threads: int | None = None,
    count: Callable[[], int] | None = None,
) -> tuple[list[str], int | None]:
    """Where the steps of an isolated run go, one at a time per slot, and each child's threads:
    a slot per GPU (:func:`local_devices`), else ``cpu_workers`` slots on the CPU, each child
    with ``worker_threads`` threads (None: the driver's). ValueError where no GPU is."""
    devices = local_devices(device, count)
    if devices == ["cpu"] and cpu_workers > 1:
        return ["cpu"] * cpu_workers, worker_threads
    return devices, None


def _apply_memory_limit(limit: int | None, device: str, data_only: bool = False) -> None:
    """The address space on CPU; the data segment (private writable memory) on CUDA, or where
    large shared mappings are the process's own (``data_only``: a Ray worker maps the object
    store, under an address-space limit torch's libraries could not even be loaded)."""
    if limit is None:
        return
    import resource

    data = data_only or device.startswith("cuda")
    which = resource.RLIMIT_DATA if data else resource.RLIMIT_AS
    resource.setrlimit(which, (limit, limit))


def _one_line(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" [{frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno}]" if frame else ""
    return f"{type(exc).__name__}: {' '.join(str(exc).split()) or type(exc).__name__}{where}"


def _die_with_parent(parent_pid: int | None) -> None:
    """A step must not outlive a scorer killed with SIGKILL (its rerun takes the step over).
    ``parent_pid`` None: the parent is a fork server, which itself exits with the scorer."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:  # it died before the line above
        os._exit(1)


def _child(
    conn,
    runner: Any,
    step: Any,
    payload: Any,
    limits: Limits,
    device: str,
    parent_pid: int | None,
    threads: int | None = None,
) -> None:
    """In the child: limits and threads, then the step; the outcome (or why there is none) to
    the pipe."""
    try:
        _die_with_parent(parent_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked child: not the driver's stop
        _apply_memory_limit(limits.memory_bytes, device)
        denormals.flush()  # before the first parallel operation: every thread takes it
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        use_reporter = getattr(runner, "use_reporter", None)
        if use_reporter is not None:  # the step's notices reach the driver's console
            use_reporter(ForwardingReporter(conn.send))
        if payload is not None:  # spawned: rebuild worker and step here
            result = runner.run_payload(payload)
        else:
            result = outcome_payload(runner(step))
    except BaseException as exc:  # noqa: BLE001 - MemoryError included
        try:
            result = {"error": _one_line(exc), "error_class": classify_exception(exc)}
        except MemoryError:
            result = {"error": "MemoryError", "error_class": "out_of_memory"}
    try:
        conn.send(result)
    except MemoryError:
        conn.send({"error": "MemoryError (sending the outcome)", "error_class": "out_of_memory"})
    finally:
        conn.close()


class SubprocessBackend:
    """One child process per running step, at most one per device."""

    def __init__(
        self,
        worker: Callable[[Any], Any] | None,
        devices: Sequence[str] = ("cpu",),
        settings: WorkerSettings | None = None,
        start_method: str | None = None,
        worker_class: type | None = None,
        on_message: Callable[[str], None] | None = None,
        threads: int | None = None,
    ):
        self.on_message, self.threads = on_message, threads
        if worker is None and settings is None:
            raise ValueError("an isolated executor needs a worker or worker settings")
        self.worker, self.settings, self.worker_class = worker, settings, worker_class
        self.devices = list(devices)
        self.capacity = len(self.devices)
        if start_method is None:
            start_method = self._default_start_method(threads)
        if start_method != "fork" and settings is None:
            raise ValueError(f"start method {start_method!r} needs worker settings")
        self.ctx = mp.get_context(start_method)
        if start_method == "forkserver":  # the server imports torch once; each child forks
            self.ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
        self.forked = start_method == "fork"
        # a fork server's children have it as their parent; it exits with this process
        self.parent_pid = None if start_method == "forkserver" else os.getpid()
        self.free = list(self.devices)
        self.running: dict[Any, tuple[Any, Any, Any, float, Limits, str, str]] = {}

    def _default_start_method(self, threads: int | None) -> str:
        """spawn on CUDA (it cannot be forked once initialised) or where there is no fork;
        a fork server for children of more than one thread: a child forked from this process,
        once it has run OpenMP threads, hangs in its first parallel region (GNU libgomp is not
        fork-safe); else fork (nothing to rebuild)."""
        if any(d.startswith("cuda") for d in self.devices):
            return "spawn"
        if "fork" not in mp.get_all_start_methods():
            return "spawn"
        return "forkserver" if threads is not None and threads > 1 else "fork"

    def _runner_for(self, device: str) -> Any:
        """A worker rebuilt from settings for this device (it loads its own registry, or the
        one inherited by fork); without settings, the driver's worker (forked children only)."""
        if self.settings is None:
            return self.worker
        if self.worker_class is None:
            raise ValueError("an isolated executor with worker settings needs a worker_class")
        return self.worker_class(self.settings.replace(device=device))

    def start(self, step: Any, limits: Limits) -> None:
        device = self.free.pop(0)
        parent, child = self.ctx.Pipe(duplex=False)
        payload = None if self.forked else step_payload(step)
        runner = self._runner_for(device)
        proc = self.ctx.Process(
            target=_child,
            args=(
                child,
                runner,
                step if self.forked else None,
                payload,
                limits,
                device,
                self.parent_pid,
                self.threads,
            ),
            name=f"bioprior-step-{step.key[:8]}",
            daemon=True,
        )
        proc.start()
        child.close()
        if self.on_message is not None and getattr(step, "kind", None) == "train":
            self.on_message(f"  training {step.label} in process {proc.pid} on {device}")
        self.running[proc.sentinel] = (proc, parent, step, time.monotonic(), limits, device, now())

    def wait(self, timeout: float | None) -> list[tuple[Any, Any]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            finished = self._collect()
            if finished or not self.running:
                return finished
            now_t = time.monotonic()
            limits_left = [
                started + limits.wall_time_s - now_t
                for (_, _, _, started, limits, _, _) in self.running.values()
                if limits.wall_time_s is not None
            ]
            waits = [
                w
                for w in (*limits_left, None if deadline is None else deadline - now_t)
                if w is not None
            ]
            wait_s = max(0.0, min(waits)) if waits else None
            ready = wait_any(
                [p.sentinel for p, *_ in self.running.values()]
                + [c for _, c, *_ in self.running.values()],
                timeout=wait_s,
            )
            if not ready and deadline is not None and time.monotonic() >= deadline:
                return self._collect()

    def _collect(self) -> list[tuple[Any, Any]]:
        done = []
        for sentinel, (proc, conn, step, started, limits, device, started_at) in list(
            self.running.items()
        ):
            elapsed = time.monotonic() - started
            result = self._receive(conn)
            if result is None and proc.is_alive():
                if limits.wall_time_s is None or elapsed < limits.wall_time_s:
                    continue
                proc.kill()
                proc.join()
                outcome = failed_outcome(
                    step,
                    f"timeout: still running after {limits.wall_time_s:g} s (killed)",
                    "timeout",
                    started_at,
                    elapsed,
                )
            else:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
                outcome = self._outcome(step, result, proc.exitcode, limits, started_at, elapsed)
            outcome.device = outcome.device or device
            if hasattr(outcome, "threads") and outcome.threads is None and self.threads:
                outcome.threads = self.threads  # a failed step's: the worker's, not ours
            conn.close()
            del self.running[sentinel]
            self.free.append(device)
            if self.settings is not None:  # a worker of its own, whose epochs were not shown
                report_training(
                    self.on_message, step, outcome, Path(self.settings.home) / "weights"
                )
            done.append((step, outcome))
        return done

    def _receive(self, conn) -> Any:
        """The child's outcome if it has sent it, else None; its notices on the way are shown."""
        while conn.poll():
            try:
                item = conn.recv()
            except (EOFError, OSError):
                return None
            if not is_forwarded_message(item):
                return item
            if self.on_message is not None:
                self.on_message(item[1])
        return None

    @staticmethod
    def _outcome(step, result, exitcode, limits, started_at, elapsed):
        if isinstance(result, dict) and "fields" in result:
            return outcome_from_payload(step, result)
        if isinstance(result, dict):
            return failed_outcome(step, result["error"], result["error_class"], started_at, elapsed)
        if exitcode is not None and exitcode < 0:
            name = signal_name(-exitcode)
            cls = "crashed"
            if -exitcode == signal.SIGKILL and limits.memory_bytes is not None:
                cls = "out_of_memory"  # the kernel's OOM killer, most likely
            return failed_outcome(
                step, f"crashed: the step's process died from {name}", cls, started_at, elapsed
            )
        return failed_outcome(
            step,
            f"crashed: the step's process exited with code {exitcode} and no outcome",
            "crashed",
            started_at,
            elapsed,
        )

    def close(self) -> None:
        """Stop the steps still running (the scorer was stopped): SIGTERM first, so that a
        training writes its checkpoint at its next step boundary and a rerun resumes it, then
        SIGKILL for whatever is left after :data:`STOP_GRACE_S`."""
        procs = [proc for proc, *_ in self.running.values() if proc.is_alive()]
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
        for proc, conn, *_ in self.running.values():
            if proc.is_alive():
                proc.kill()
            proc.join()
            conn.close()
        self.running.clear()


class IsolatedExecutor:
    """Each step in its own process with limits; one at a time per device; optional claims."""

    def __init__(
        self,
        limits: Limits | Callable[[Any], Limits] = Limits(),
        devices: Sequence[str] = ("cpu",),
        settings: WorkerSettings | None = None,
        start_method: str | None = None,
        claims: Any = None,
        on_skip: Callable[[Any], None] | None = None,
        poll_s: float = 0.5,
        worker_class: type | None = None,
        on_message: Callable[[str], None] | None = None,
        threads: int | None = None,
    ):
        self.on_message, self.threads = on_message, threads
        self.limits_for = limits if callable(limits) else (lambda step, _l=limits: _l)
        self.devices, self.settings, self.start_method = list(devices), settings, start_method
        self.worker_class = worker_class
        self.claims, self.on_skip, self.poll_s = claims, on_skip, poll_s

    def run(self, steps: Sequence[Any], worker: Callable[[Any], Any] | None) -> Iterator[Any]:
        backend = SubprocessBackend(
            worker,
            self.devices,
            self.settings,
            self.start_method,
            self.worker_class,
            self.on_message,
            self.threads,
        )
        yield from schedule(
            steps, backend, self.limits_for, self.claims, self.on_skip, poll_s=self.poll_s
        )


__all__ = ["IsolatedExecutor", "Limits", "SubprocessBackend", "device_slots", "local_devices"]
