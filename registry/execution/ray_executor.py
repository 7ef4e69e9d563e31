"""The Ray executor (``pip install "bioprior[ray]"``): steps become Ray tasks on a cluster.

Each step is a task with a resource request (``num_gpus`` per step, fractional for small models;
``num_cpus`` otherwise). The scheduler (:mod:`scheduling`) starts a training before the
evaluations that need it; weights move through the shared weights store (``$BIOPRIOR_HOME/weights``
on a path every node sees: the task gets the driver's home in its :class:`WorkerSettings`), or,
with ``weights_transport="object-store"``, through Ray's object store (:mod:`weights_transport`).
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
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from bioprior.registry.base import denormals
from bioprior.registry.base.progress import CollectingReporter
from bioprior.registry.execution.isolated import _apply_memory_limit, report_training
from bioprior.registry.execution.scheduling import Limits, schedule
from bioprior.registry.planning.outcomes import now
from bioprior.registry.planning.payloads import (
    WorkerSettings,
    failed_outcome,
    failed_payload,
    outcome_from_payload,
    step_payload,
)
from bioprior.registry.planning.steps import step_training_keys
from bioprior.registry.store import weights as weights_transport
from bioprior.registry.store.weights import BadWeights, Delivery


class RayUnavailable(RuntimeError):
    """Ray is not installed, the cluster cannot be reached or cannot run the steps as asked
    (one line, ``OPTION: message``, for the CLI)."""


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


#: per Ray worker process: one worker per settings, with the reporter that keeps its notices
_WORKERS: dict[tuple[type, WorkerSettings], tuple[Any, CollectingReporter]] = {}


def run_step(
    settings: WorkerSettings,
    payload: dict[str, Any],
    limits: Limits,
    worker_class: type | None = None,
    delivery: Delivery | None = None,
    *blobs: bytes,
) -> Any:
    """The body of a Ray task: one worker per settings per Ray worker process (its registry and
    cached models are reused across tasks), then the step.

    With a ``delivery`` (``object-store``), the worker's home is this process's own temp folder
    (datasets still come from the driver's data root); ``blobs`` (resolved by Ray from the
    ObjectRefs the driver passed) are installed in its weights store, checked by hash, before
    the step; the files of ``delivery.returns`` come back after the outcome, as task returns."""
    denormals.flush()  # a Ray worker's first step comes before its first parallel operation
    device = settings.device
    if device == "auto":
        import ray

        device = "cuda:0" if ray.get_gpu_ids() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES
    settings = settings.replace(device=device)
    if delivery is not None:
        data_root = settings.data_root or str(Path(settings.home) / "data")
        settings = settings.replace(home=str(weights_transport.local_home()), data_root=data_root)
    if limits.memory_bytes is not None:  # a fresh worker process per task (max_calls=1)
        _apply_memory_limit(limits.memory_bytes, device, data_only=True)
    cached = _WORKERS.get((worker_class, settings))
    if cached is None:
        cached = _WORKERS[(worker_class, settings)] = (worker_class(settings), CollectingReporter())
        if hasattr(cached[0], "use_reporter"):
            cached[0].use_reporter(cached[1])
    worker, notices = cached
    if delivery is None:
        out = worker.run_payload(payload)
    else:
        out = _run_delivered(worker, Path(settings.home) / "weights", payload, delivery, blobs)
    result = out[0] if isinstance(out, tuple) else out
    if isinstance(result, dict):
        result["messages"] = notices.drain()  # shown by the driver (e.g. unreadable weights)
    return out


def _run_delivered(worker, weights_dir: Path, payload, delivery: Delivery, blobs) -> Any:
    """Install, run, return (``object-store``); the outcome payload says what moved."""
    installed = 0
    try:
        for (key, expected), blob in zip(delivery.install, blobs, strict=True):
            weights_transport.install(weights_dir, key, blob, expected)
            installed += 1
        before = getattr(worker, "trainings_run", 0)
        result = worker.run_payload(payload)
    except (BadWeights, OSError) as exc:  # damaged on the way: retried like a lost worker
        result = failed_payload(f"weights transport: {exc}", "worker_lost")
        before = getattr(worker, "trainings_run", 0)
    trained = getattr(worker, "trainings_run", 0) - before
    result["transport"] = {"installed": installed, "trained": trained}
    files = [weights_transport.read(weights_dir, key) for key in delivery.returns]
    # the files live on in the object store and the driver's store (and the models in this
    # worker's memory): nothing is left on the worker's disk after its task
    for path in weights_dir.glob("*.safetensors"):  # one task at a time in a worker process
        path.unlink(missing_ok=True)
    if not delivery.returns:
        return result
    return (result, *[got[0] if got else None for got in files])


class RayBackend:
    """Steps as Ray tasks; ``capacity`` is how many the cluster runs at once."""

    def __init__(
        self,
        settings: WorkerSettings,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        worker_class: type | None = None,
        weights_transport: str = "shared",
        users: Counter | None = None,
        on_message: Callable[[str], None] | None = None,
    ):
        self.ray = _import_ray()
        self.settings, self.worker_class = settings, worker_class
        self.object_store = weights_transport == "object-store"
        self.store_dir = Path(settings.home) / "weights"  # the driver's weights store
        #: training key -> (ObjectRef of its file, tensors hash), while evaluations still need it
        self.weights: dict[str, tuple[Any, str]] = {}
        self.users = users if users is not None else Counter()  # key -> evaluations to start
        self.moved: Counter = Counter()  # stored, sent, installed, trained (the summary line)
        self.on_message = on_message
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        resources = self.ray.cluster_resources()
        slots = [int(resources.get("CPU", 1) // num_cpus)] if num_cpus else []
        if num_gpus:
            slots.append(int(resources.get("GPU", 0) // num_gpus))
        self.capacity = max(1, min(slots) if slots else 1)
        self.task = self.ray.remote(run_step)
        # a memory limit is set in the worker process: a fresh one per task (max_calls is a
        # property of the remote function; Ray refuses it in .options())
        self.fresh_task = self.ray.remote(max_calls=1)(run_step)
        #: outcome ref -> (step, start time, limits, started at, its files' refs by training key)
        self.running: dict[Any, tuple[Any, float, Limits, str, dict[str, Any]]] = {}

    def start(self, step: Any, limits: Limits) -> None:
        options: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "max_retries": 0,  # retries are the scheduler's, the same for every executor
        }
        task = self.task
        if limits.memory_bytes is not None:
            options["memory"] = limits.memory_bytes
            task = self.fresh_task
        payload = step_payload(step)
        args: list[Any] = [self.settings, payload, limits, self.worker_class]
        members: tuple[str, ...] = ()
        if self.object_store and getattr(step, "kind", None) == "train":
            members = tuple(m.key for m in getattr(step, "members", ()))
            options["num_returns"] = 1 + len(members)  # the outcome, then each member's file
            args.append(Delivery(returns=members))
        elif self.object_store:
            install, blobs = self._deliver(step)
            args += [Delivery(install=install), *blobs]  # top-level refs: Ray moves them
        refs = task.options(**options).remote(*args)
        ref, files = (refs[0], refs[1:]) if members else (refs, [])
        returns = dict(zip(members, files, strict=True))
        self.running[ref] = (step, time.monotonic(), limits, now(), returns)

    def _deliver(self, step: Any) -> tuple[tuple[tuple[str, str], ...], list[Any]]:
        """The weights an evaluation declared, as ObjectRefs: those trained in this sweep (task
        returns), else the driver's stored files, put into the object store once."""
        install, blobs = [], []
        for key in sorted(step_training_keys(step)):
            held = self.weights.get(key)
            if held is None:
                stored = weights_transport.read(self.store_dir, key)
                if stored is None:
                    continue  # not trained (a failed batch member): the step trains it itself
                held = (self.ray.put(stored[0]), stored[1])
                self.moved["sent"] += 1
            install.append((key, held[1]))
            blobs.append(held[0])
            self.users[key] -= 1
            if self.users[key] > 0:
                self.weights[key] = held
            else:  # its last evaluation has it; a retry sends the stored file again
                self.weights.pop(key, None)
        return tuple(install), blobs

    def wait(self, timeout: float | None) -> list[tuple[Any, Any]]:
        if not self.running:
            return []
        timeouts = [
            started + limits.wall_time_s - time.monotonic()
            for _, started, limits, _, _ in self.running.values()
            if limits.wall_time_s is not None
        ]
        wait_s = min([t for t in (timeout, *timeouts) if t is not None], default=None)
        ready, _ = self.ray.wait(
            list(self.running), num_returns=1, timeout=None if wait_s is None else max(0, wait_s)
        )
        done = [self._finish(ref) for ref in ready]
        for ref, (step, started, limits, started_at, _) in list(self.running.items()):
            elapsed = time.monotonic() - started
            if limits.wall_time_s is not None and elapsed >= limits.wall_time_s:
                self.ray.cancel(ref, force=True)
                del self.running[ref]
                message = f"timeout: still running after {limits.wall_time_s:g} s (cancelled)"
                done.append((step, failed_outcome(step, message, "timeout", started_at, elapsed)))
        return done

    def _finish(self, ref: Any) -> tuple[Any, Any]:
        step, started, _limits, started_at, returns = self.running.pop(ref)
        elapsed = time.monotonic() - started
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            return step, self._lost(step, exc, started_at, elapsed)
        outcome = outcome_from_payload(step, result)
        for text in result.get("messages", ()) if self.on_message is not None else ():
            self.on_message(text)
        if self.object_store:
            moved = result.get("transport", {})
            self.moved["installed"] += moved.get("installed", 0)
            if getattr(step, "kind", None) != "train":
                self.moved["trained"] += moved.get("trained", 0)
        if outcome.status == "ok" and returns:
            try:
                self._store(returns)
            except BadWeights as exc:  # damaged on the way: retried like a lost worker
                message = f"weights transport: {exc}"
                return step, failed_outcome(step, message, "worker_lost", started_at, elapsed)
            except self.ray.exceptions.RayError as exc:
                return step, self._lost(step, exc, started_at, elapsed)
            except OSError as exc:  # the driver's weights store cannot be written
                message = f"weights transport: cannot store the weights: {exc}"
                return step, failed_outcome(step, message, "plugin_error", started_at, elapsed)
        report_training(self.on_message, step, outcome, self.store_dir)
        return step, outcome

    def _lost(self, step: Any, exc: BaseException, started_at: str, elapsed: float) -> Any:
        """The failed outcome of a task Ray could not run to its end."""
        exc_types = self.ray.exceptions
        if isinstance(exc, exc_types.OutOfMemoryError):
            message, error_class = f"out of memory: {_first_line(exc)}", "out_of_memory"
        elif isinstance(exc, (exc_types.WorkerCrashedError, exc_types.NodeDiedError)):
            message, error_class = f"worker lost mid-step: {_first_line(exc)}", "worker_lost"
        else:
            message, error_class = f"ray: {_first_line(exc)}", "worker_lost"
        return failed_outcome(step, message, error_class, started_at, elapsed)

    def _store(self, returns: dict[str, Any]) -> None:
        """A training's files from the object store into the driver's weights store (checked by
        hash, written atomically); kept as ObjectRefs for the evaluations that need them."""
        for key, file_ref in returns.items():
            blob = self.ray.get(file_ref)
            if blob is None:
                continue  # a member that failed: its evaluations train it again
            digest = weights_transport.install(self.store_dir, key, blob)
            self.moved["stored"] += 1
            if self.users[key] > 0:
                self.weights[key] = (file_ref, digest)

    def summary(self) -> str | None:
        """One line on what moved through the object store (None under ``shared``)."""
        if not self.object_store:
            return None
        m = self.moved
        return (
            f"weights through Ray's object store: {m['stored']} trained and stored in "
            f"{self.store_dir}, {m['sent']} sent from it, {m['installed']} installed by "
            f"evaluations, {m['trained']} trained again by an evaluation"
        )

    def close(self) -> None:
        for ref in list(self.running):
            self.ray.cancel(ref, force=True)
        self.running.clear()
        self.weights.clear()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class RayOptions(Protocol):
    """What :meth:`RayExecutor.from_options` reads (the scoring layer's ``ExecutionOptions``)."""

    ray_address: str | None
    cpus_per_step: float
    gpus_per_step: float | None
    connect_timeout_s: float
    init_timeout_s: float
    weights_transport: str | None


def connect_ray(
    address: str | None,
    connect_timeout_s: float = 5.0,
    init_timeout_s: float = 60.0,
    init_kwargs: dict[str, Any] | None = None,
) -> bool:
    """Connect to the cluster at ``address`` (None: start a local Ray), within the timeouts; True
    when this call started Ray (False: it was already). Raises :class:`RayUnavailable`."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if address:
        probe(address, connect_timeout_s)
    kwargs = {"log_to_driver": False, "logging_level": "ERROR", **(init_kwargs or {})}
    if not address:
        kwargs.setdefault("include_dashboard", False)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # our one line, not Ray's
    outcome: list[BaseException | None] = []

    def init() -> None:
        try:
            ray.init(address=address or None, **kwargs)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - ConnectionError, RuntimeError ...
            outcome.append(exc)

    # ray.init waits for minutes on a port that answers but is not a Ray head: bound it
    thread = threading.Thread(target=init, name="bioprior-ray-init", daemon=True)
    thread.start()
    thread.join(init_timeout_s)
    where = address or "a local Ray"
    if not outcome:
        raise RayUnavailable(
            f"--ray-address: no answer from a Ray cluster at {where} within {init_timeout_s:g} s"
        )
    if outcome[0] is not None:
        raise RayUnavailable(f"--ray-address: cannot connect to {where}: {_first_line(outcome[0])}")
    return True


def cluster_gpu_count() -> float:
    return float(_import_ray().cluster_resources().get("GPU", 0))


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
        worker_class: type | None = None,
        weights_transport: str = "shared",
        on_message: Callable[[str], None] | None = None,
        started_ray: bool = False,
    ):
        self.worker_class = worker_class
        self.weights_transport, self.on_message = weights_transport, on_message
        self.settings, self.address = settings, address
        self.limits_for = limits if callable(limits) else (lambda step, _l=limits: _l)
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.claims, self.on_skip, self.poll_s = claims, on_skip, poll_s
        self.connect_timeout_s, self.init_timeout_s = connect_timeout_s, init_timeout_s
        self.init_kwargs = init_kwargs or {}
        #: this executor started Ray (and shuts it down)
        self._started_ray = started_ray

    @classmethod
    def from_options(
        cls, options: RayOptions, settings: WorkerSettings, device: str, **kwargs: Any
    ) -> RayExecutor:
        """Connected before anything runs (an unreachable address is bad input), sized on the
        cluster: a GPU per step where it has GPUs and ``device`` is not the CPU (unless
        ``gpus_per_step`` says otherwise), and the device the tasks see (Ray sets
        CUDA_VISIBLE_DEVICES per task, so a task's GPU is ``cuda``). Raises
        :class:`RayUnavailable` as ``OPTION: message`` (Ray left as it was found)."""
        started = connect_ray(
            options.ray_address, options.connect_timeout_s, options.init_timeout_s
        )
        try:
            gpus = cluster_gpu_count()
            if device.startswith("cuda") and not gpus:  # the driver itself may have none
                raise RayUnavailable(
                    f"--device: {device}: the Ray cluster has no GPU (use auto or cpu)"
                )
            num_gpus = options.gpus_per_step or 0.0
            if options.gpus_per_step is None and device != "cpu":  # a GPU per step where there are
                num_gpus = 1.0 if gpus else 0.0
            if device.startswith("cuda") and not num_gpus:
                raise RayUnavailable(
                    f"--gpus-per-step: 0 with --device {device}: no task gets a GPU"
                )
        except BaseException:
            if started:
                _import_ray().shutdown()
            raise
        if device != "cpu":  # what the tasks get
            settings = settings.replace(device="cuda" if num_gpus else "cpu")
        return cls(
            settings,
            options.ray_address,
            num_cpus=options.cpus_per_step,
            num_gpus=num_gpus,
            connect_timeout_s=options.connect_timeout_s,
            init_timeout_s=options.init_timeout_s,
            weights_transport=options.weights_transport or "shared",
            started_ray=started,
            **kwargs,
        )

    def connect(self) -> None:
        """Connect now (the CLI does this before anything runs, so a bad address is bad input)."""
        if connect_ray(self.address, self.connect_timeout_s, self.init_timeout_s, self.init_kwargs):
            self._started_ray = True

    def cluster_gpus(self) -> float:
        return cluster_gpu_count()

    def run(self, steps: Sequence[Any], worker: Any = None) -> Iterator[Any]:
        self.connect()
        users = Counter(  # how many evaluations need each training's weights
            key
            for step in steps
            if getattr(step, "kind", None) != "train"
            for key in step_training_keys(step)
        )
        backend = RayBackend(
            self.settings,
            self.num_cpus,
            self.num_gpus,
            self.worker_class,
            self.weights_transport,
            users,
            self.on_message,
        )
        yield from schedule(
            steps, backend, self.limits_for, self.claims, self.on_skip, poll_s=self.poll_s
        )
        line = backend.summary()
        if line and self.on_message:
            self.on_message(line)

    def shutdown(self) -> None:
        if self._started_ray:
            _import_ray().shutdown()
            self._started_ray = False
