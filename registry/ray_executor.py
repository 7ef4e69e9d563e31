"""The Ray executor (``pip install "bioprior[ray]"``): steps become Ray tasks on a cluster.

Each step is a task with a resource request (``num_gpus`` per step, fractional for small models;
``num_cpus`` otherwise). The scheduler (:mod:`scheduling`) starts a training before the
evaluations that need it; weights move through the shared weights store (``$BIOPRIOR_HOME/weights``
on a path every node sees: the task gets the driver's home in its :class:`WorkerSettings`).
Tasks get the step as a JSON payload and rebuild it against their own registry; outcomes stream
back as plain dicts and only the driver writes the database. A task whose worker or node dies
(``worker_lost``) or that runs past its wall time (cancelled, ``timeout``) is retried up to
``retries`` times, then stored as failed.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

from .scheduling import Limits, schedule
from .worker import StepWorker, WorkerSettings, failed_outcome, outcome_from_payload, step_payload


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached (one line, for the CLI)."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            'ray is not installed: pip install "bioprior[ray]" (or --executor local)'
        ) from None
    return ray


def probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (one line, within ``timeout_s``) when nothing listens at ``address``
    (``HOST:PORT`` of a cluster's head, or ``ray://HOST:PORT``). ``auto`` is not probed."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or port is None:
        raise RayUnavailable(
            f"--ray-address: expected HOST:PORT or ray://HOST:PORT (got {address!r})"
        )
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RayUnavailable(
            f"--ray-address: no Ray cluster reachable at {address} ({exc.strerror or exc})"
        ) from None


_WORKERS: dict[tuple[type, WorkerSettings], Any] = {}


def run_step(
    settings: WorkerSettings,
    payload: dict[str, Any],
    limits: Limits,
    worker_class: type = StepWorker,
) -> dict[str, Any]:
    """The body of a Ray task: one worker per settings per Ray worker process (its registry and
    cached models are reused across tasks), then the step."""
    device = settings.device
    if device == "auto":
        import ray

        device = "cuda:0" if ray.get_gpu_ids() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES
    settings = settings.replace(device=device)
    if limits.memory_bytes is not None:  # a fresh worker process per task (max_calls=1)
        from .isolation import _apply_memory_limit

        _apply_memory_limit(limits.memory_bytes, device)
    worker = _WORKERS.get((worker_class, settings))
    if worker is None:
        worker = _WORKERS[(worker_class, settings)] = worker_class(settings)
    return worker.run_payload(payload)


class RayBackend:
    """Steps as Ray tasks; ``capacity`` is how many the cluster runs at once."""

    def __init__(
        self,
        settings: WorkerSettings,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        worker_class: type = StepWorker,
    ):
        self.ray = _import_ray()
        self.settings, self.worker_class = settings, worker_class
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        resources = self.ray.cluster_resources()
        slots = [int(resources.get("CPU", 1) // num_cpus)] if num_cpus else []
        if num_gpus:
            slots.append(int(resources.get("GPU", 0) // num_gpus))
        self.capacity = max(1, min(slots) if slots else 1)
        self.task = self.ray.remote(run_step)
        self.running: dict[Any, tuple[Any, float, Limits, str]] = {}

    def start(self, step: Any, limits: Limits) -> None:
        from .executor import now

        options: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "max_retries": 0,  # retries are the scheduler's, the same for every executor
        }
        if limits.memory_bytes is not None:
            options["memory"] = limits.memory_bytes
            options["max_calls"] = 1
        payload = step_payload(step)
        ref = self.task.options(**options).remote(self.settings, payload, limits, self.worker_class)
        self.running[ref] = (step, time.monotonic(), limits, now())

    def wait(self, timeout: float | None) -> list[tuple[Any, Any]]:
        if not self.running:
            return []
        timeouts = [
            started + limits.wall_time_s - time.monotonic()
            for _, started, limits, _ in self.running.values()
            if limits.wall_time_s is not None
        ]
        wait_s = min([t for t in (timeout, *timeouts) if t is not None], default=None)
        ready, _ = self.ray.wait(
            list(self.running), num_returns=1, timeout=None if wait_s is None else max(0, wait_s)
        )
        done = [self._finish(ref) for ref in ready]
        for ref, (step, started, limits, started_at) in list(self.running.items()):
            elapsed = time.monotonic() - started
            if limits.wall_time_s is not None and elapsed >= limits.wall_time_s:
                self.ray.cancel(ref, force=True)
                del self.running[ref]
                message = f"timeout: still running after {limits.wall_time_s:g} s (cancelled)"
                done.append((step, failed_outcome(step, message, "timeout", started_at, elapsed)))
        return done

    def _finish(self, ref: Any) -> tuple[Any, Any]:
        step, started, _limits, started_at = self.running.pop(ref)
        elapsed = time.monotonic() - started
        exc_types = self.ray.exceptions
        try:
            return step, outcome_from_payload(step, self.ray.get(ref))
        except exc_types.OutOfMemoryError as exc:
            return step, failed_outcome(
                step, f"out of memory: {_first_line(exc)}", "out_of_memory", started_at, elapsed
            )
        except (exc_types.WorkerCrashedError, exc_types.NodeDiedError) as exc:
            message = f"worker lost mid-step: {_first_line(exc)}"
            return step, failed_outcome(step, message, "worker_lost", started_at, elapsed)
        except exc_types.RayError as exc:
            return step, failed_outcome(
                step, f"ray: {_first_line(exc)}", "worker_lost", started_at, elapsed
            )

    def close(self) -> None:
        for ref in list(self.running):
            self.ray.cancel(ref, force=True)
        self.running.clear()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class RayExecutor:
    """``bioprior score --executor ray [--ray-address HOST:PORT]``: connect (or start a local
    Ray), run the steps as tasks, yield their outcomes as they finish."""

    def __init__(
        self,
        settings: WorkerSettings,
        address: str | None = None,
        limits: Limits | Callable[[Any], Limits] = Limits(),
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        claims: Any = None,
        on_skip: Callable[[Any], None] | None = None,
        connect_timeout_s: float = 5.0,
        init_timeout_s: float = 60.0,
        init_kwargs: dict[str, Any] | None = None,
        poll_s: float = 0.5,
        worker_class: type = StepWorker,
    ):
        self.worker_class = worker_class
        self.settings, self.address = settings, address
        self.limits_for = limits if callable(limits) else (lambda step, _l=limits: _l)
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.claims, self.on_skip, self.poll_s = claims, on_skip, poll_s
        self.connect_timeout_s, self.init_timeout_s = connect_timeout_s, init_timeout_s
        self.init_kwargs = init_kwargs or {}
        self._started_ray = False

    def connect(self) -> None:
        """Connect now (the CLI does this before anything runs, so a bad address is bad input)."""
        ray = _import_ray()
        if ray.is_initialized():
            return
        if self.address:
            probe(self.address, self.connect_timeout_s)
        kwargs = {"log_to_driver": False, "logging_level": "ERROR", **self.init_kwargs}
        if not self.address:
            kwargs.setdefault("include_dashboard", False)
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # our one line, not Ray's
        outcome: list[BaseException | None] = []

        def init() -> None:
            try:
                ray.init(address=self.address or None, **kwargs)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - ConnectionError, RuntimeError ...
                outcome.append(exc)

        # ray.init waits for minutes on a port that answers but is not a Ray head: bound it
        thread = threading.Thread(target=init, name="bioprior-ray-init", daemon=True)
        thread.start()
        thread.join(self.init_timeout_s)
        where = self.address or "a local Ray"
        if not outcome:
            raise RayUnavailable(
                f"--ray-address: no answer from a Ray cluster at {where} within "
                f"{self.init_timeout_s:g} s"
            )
        if outcome[0] is not None:
            raise RayUnavailable(
                f"--ray-address: cannot connect to {where}: {_first_line(outcome[0])}"
            )
        self._started_ray = True

    def cluster_gpus(self) -> float:
        return float(_import_ray().cluster_resources().get("GPU", 0))

    def run(self, steps: Sequence[Any], worker: Any = None) -> Iterator[Any]:
        self.connect()
        backend = RayBackend(self.settings, self.num_cpus, self.num_gpus, self.worker_class)
        yield from schedule(
            steps, backend, self.limits_for, self.claims, self.on_skip, poll_s=self.poll_s
        )

    def shutdown(self) -> None:
        if self._started_ray:
            _import_ray().shutdown()
            self._started_ray = False
