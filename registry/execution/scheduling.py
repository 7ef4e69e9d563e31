"""One scheduler for every executor: dependencies, claims, retries; backends only run steps.

A backend starts a step (in this process, in a child process, as a Ray task) and reports
finished ones; :func:`schedule` decides what may start: a step whose dependency failed is
yielded as failed (``dependency_failed``) without running, a step whose dependency is still
running waits, a step another scorer holds (see :mod:`claims`) waits or is skipped once done.
Failures of a retryable class (timeout, crashed, out_of_memory, worker_lost) are retried up
to ``retries`` times. Outcomes are yielded as they finish; the driver writes them.

Steps start in plan order, except that a step whose dependencies have all finished goes first:
a finished training is evaluated before the next training starts, so a long sweep reports its
results as it goes and a stopped run leaves every finished training scored. An evaluation step
marked ``after_trainings`` (the plan chose it where that shortens the run: see
:meth:`~bioprior.registry.scoring.session.Planned.evaluate_after_trainings`) keeps its place in
plan order instead, after the trainings still to start.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bioprior.registry.base.failures import RETRYABLE
from bioprior.registry.planning.outcomes import dependency_failed, failed, now
from bioprior.registry.store.claims import claim_key


@dataclass(frozen=True)
class Limits:
    """Per-step limits; ``None`` means no limit."""

    wall_time_s: float | None = None
    memory_bytes: int | None = None
    retries: int = 0

    def merged(self, override: Limits | None) -> Limits:
        """``override``'s set fields win (the command line over a submission's settings)."""
        if override is None:
            return self
        return Limits(
            override.wall_time_s if override.wall_time_s is not None else self.wall_time_s,
            override.memory_bytes if override.memory_bytes is not None else self.memory_bytes,
            override.retries if override.retries else self.retries,
        )


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1.5GB"``, ``"1000000"`` -> bytes (binary units); ValueError."""
    raw = str(text).strip().upper().removesuffix("B").removesuffix("I")
    unit = raw[-1:] if raw[-1:] in SIZE_UNITS else ""
    number = raw[: len(raw) - len(unit)].strip()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"expected a size like 4G or 512M (got {text!r})") from None
    if not value > 0:
        raise ValueError(f"must be positive (got {text!r})")
    return int(value * SIZE_UNITS[unit])


class Backend(Protocol):
    capacity: int

    def start(self, step: Any, limits: Limits) -> None: ...
    def wait(self, timeout: float | None) -> list[tuple[Any, Any]]: ...
    def close(self) -> None: ...


def _class(outcome: Any) -> str | None:
    return getattr(outcome, "error_class", None)


def _deps(step: Any) -> tuple[str, ...]:
    return tuple(getattr(step, "depends_on", ()) or ())


def _ready_first(
    pending: list[Any], status: dict[str, str], in_plan: set[str], upstream: set[str]
) -> list[Any]:
    """``pending`` in plan order, with the steps that end a chain (nothing in the plan depends
    on them: evaluations) and whose dependencies all finished (in this run, or before it: a
    cached training is not in the plan) in front, unless they are marked ``after_trainings``."""

    def waits(step: Any) -> bool:
        if step.key in upstream or getattr(step, "after_trainings", False):
            return True
        return any(d in in_plan and d not in status for d in _deps(step))

    return sorted(pending, key=waits)  # stable: plan order within each group


def schedule(
    steps: Sequence[Any],
    backend: Backend,
    limits_for: Callable[[Any], Limits] = lambda step: Limits(),
    claims: Any = None,
    on_skip: Callable[[Any], None] | None = None,
    poll_s: float = 0.5,
) -> Iterator[Any]:
    """Run ``steps`` (topologically ordered) on ``backend``; yield outcomes as they finish."""
    in_plan = {s.key for s in steps}
    upstream = {d for s in steps for d in _deps(s)}  # what other steps wait for
    status: dict[str, str] = {}
    errors: dict[str, str | None] = {}  # failed step key -> its error, for its dependents
    classes: dict[str, str | None] = {}  # failed step key -> its error class
    attempts: dict[str, int] = {}
    pending = list(steps)
    running: dict[str, Any] = {}
    try:
        while pending or running:
            for step in _ready_first(pending, status, in_plan, upstream):
                if len(running) >= backend.capacity:
                    break
                deps = _deps(step)
                failed_dep = next((d for d in deps if status.get(d) == "failed"), None)
                if failed_dep is not None:
                    pending.remove(step)
                    status[step.key] = "failed"
                    why, cls = errors.get(failed_dep), classes.get(failed_dep)
                    yield dependency_failed(step, {failed_dep: why}, cls)  # the row says why
                    errors[step.key], classes[step.key] = why, cls
                    continue
                if any(d in in_plan and d not in status for d in deps):
                    continue  # its training is still to run (or running)
                if claims is not None:
                    state = claims.acquire(step)
                    if state == "done":
                        pending.remove(step)
                        status[step.key] = "ok"
                        if on_skip:
                            on_skip(step)
                        continue
                    if state == "busy":
                        continue
                pending.remove(step)
                attempts[claim_key(step)] = attempts.get(claim_key(step), 0) + 1
                backend.start(step, limits_for(step))
                running[claim_key(step)] = step
            if not running:
                if pending:
                    time.sleep(poll_s)  # everything left is claimed by another scorer
                continue
            for step, outcome in backend.wait(poll_s if pending else None):
                running.pop(claim_key(step), None)
                limits = limits_for(step)
                if (
                    outcome.status != "ok"
                    and _class(outcome) in RETRYABLE
                    and attempts[claim_key(step)] <= limits.retries
                ):
                    attempts[claim_key(step)] += 1
                    backend.start(step, limits)
                    running[claim_key(step)] = step
                    continue
                if attempts[claim_key(step)] > 1 and outcome.error:
                    outcome.error = f"{outcome.error} (after {attempts[claim_key(step)]} attempts)"
                status[step.key] = outcome.status
                if outcome.status != "ok":
                    errors[step.key], classes[step.key] = outcome.error, _class(outcome)
                yield outcome
                if claims is not None:
                    claims.finish(step)
    finally:
        backend.close()
        if claims is not None:
            for step in running.values():
                claims.release(step)


class InProcessBackend:
    """Runs each step in this process, at once (no limits can be enforced here)."""

    capacity = 1

    def __init__(self, worker: Callable[[Any], Any]):
        self.worker = worker
        self.done: list[tuple[Any, Any]] = []

    def start(self, step: Any, limits: Limits) -> None:
        started, t0 = now(), time.perf_counter()
        try:
            outcome = self.worker(step)
        except Exception as exc:  # noqa: BLE001 - a worker bug must not stop the others
            outcome = failed(step, exc, started, t0)
        self.done.append((step, outcome))

    def wait(self, timeout: float | None) -> list[tuple[Any, Any]]:
        done, self.done = self.done, []
        return done

    def close(self) -> None:
        pass


class ClaimingExecutor:
    """In-process and sequential like :class:`LocalExecutor`, but claims each step first, so
    that scorers sharing a database never compute a step twice."""

    def __init__(self, claims: Any, on_skip: Callable[[Any], None] | None = None, poll_s=0.5):
        self.claims, self.on_skip, self.poll_s = claims, on_skip, poll_s

    def run(self, steps: Sequence[Any], worker: Callable[[Any], Any]) -> Iterator[Any]:
        yield from schedule(
            steps,
            InProcessBackend(worker),
            claims=self.claims,
            on_skip=self.on_skip,
            poll_s=self.poll_s,
        )


@dataclass
class _Done:
    """A simulated step's outcome: finished, fine."""

    key: str
    status: str = "ok"
    error: str | None = None
    error_class: str | None = None


class _SimulatedBackend:
    """Runs nothing: a step takes its estimated seconds on a virtual clock."""

    def __init__(self, seconds: Callable[[Any], float], capacity: int):
        self.seconds, self.capacity = seconds, max(1, capacity)
        self.clock = 0.0
        self.started = itertools.count()
        self.running: list[tuple[float, int, Any]] = []  # (finish time, start order, step)

    def start(self, step: Any, limits: Limits) -> None:
        self.running.append((self.clock + self.seconds(step), next(self.started), step))

    def wait(self, timeout: float | None) -> list[tuple[Any, Any]]:
        finish, _, step = min(self.running, key=lambda r: r[:2])
        self.running = [r for r in self.running if r[2] is not step]
        self.clock = max(self.clock, finish)
        return [(step, _Done(step.key))]

    def close(self) -> None:
        pass


def wall_time(steps: Sequence[Any], seconds: Callable[[Any], float], workers: int) -> float:
    """The wall time of ``steps`` run by :func:`schedule` on ``workers`` side by side, each
    taking ``seconds(step)`` (its estimate): the same order, dependencies and ready-first rule
    (``after_trainings`` included) as a real run, on a virtual clock. Where every step keeps a worker busy until its last
    dependent can start, this is the plan's wall time; a sum of the steps would be ``workers``
    times too long."""
    backend = _SimulatedBackend(seconds, workers)
    for _ in schedule(steps, backend):
        pass
    return backend.clock
