"""How many CPU threads torch uses: chosen on purpose, never more than the CPU can give.

Torch's default (one thread per physical core) oversubscribes a CPU that other work already
loads: on 2 shared cores a small model trains several times slower than with one thread. The
default here (``auto``) is

    threads = max(1, min(torch's default, usable cores, round(usable cores - load)))

with the usable cores from ``os.sched_getaffinity`` (and a cgroup CPU quota, as in a container)
and the load the cores that other processes would keep from a run of one thread per core, as
Linux's fair scheduler shares them (:func:`contended_cores`: their runnable threads weighed by
nice and session, :mod:`.fair_share`), so a niced background job leaves the cores to the run;
where ``/proc`` does not say, the smaller of ``os.getloadavg``'s 1-minute average and the cores
that other processes use right now (``/proc/stat`` over 0.2 s): the average alone still counts a
job that ended a minute ago. ``--threads N`` on ``bioprior score``, then
``$BIOPRIOR_THREADS``, then ``$OMP_NUM_THREADS`` override it (``auto`` or ``0`` mean the default).

Training numbers on CPU depend on the thread count: oneDNN splits a convolution's weight and
bias gradients over the batch by thread, and whole-tensor sums are reduced in per-thread chunks,
so 1 and 2 threads give weights that differ in the last bits after one step and visibly after
fifty epochs (``torch.use_deterministic_algorithms`` does not change either on CPU). The only
configuration found whose gradients do not depend on the thread count (oneDNN off and MKL's
strict CNR mode, ``MKL_CBWR=AVX2,STRICT``; checked for 1-4 threads on the quickstart's model) is
1.4x slower with one thread and far slower with two, so it is not used. Every result row records the
thread count; ``bioprior score --verify N`` retrains and reports drift.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bioprior.registry.base import denormals, fair_share

ENV = "BIOPRIOR_THREADS"


class ThreadsError(ValueError):
    """A thread setting that is not a positive integer or ``auto``."""


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count and why it was chosen (printed in the plan line)."""

    threads: int
    source: str  # "auto", "--threads", "BIOPRIOR_THREADS" or "OMP_NUM_THREADS"
    cores: int
    load: float | None = None

    def describe(self) -> str:
        if self.source != "auto":
            return f"{self.threads} thread{'s' * (self.threads != 1)} ({self.source})"
        load = "unknown" if self.load is None else f"{self.load:.1f}"
        return (
            f"{self.threads} thread{'s' * (self.threads != 1)} "
            f"(auto: {self.cores} usable cores, load {load}; --threads N overrides)"
        )


def usable_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    try:
        limit, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(1, math.ceil(int(limit) / int(period)))


def load_average() -> float | None:
    """The busy cores: the 1-minute load average, or what other processes use right now when
    that is less (the average lags a finished job by minutes: right after the ``pip install``
    of a first run it still counts the install)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    now = busy_cores_now()
    if load is None or now is None:
        return load if now is None else now
    return min(load, now)


def present_load(interval_s: float = 0.5, loadavg: Path = Path("/proc/loadavg")) -> float | None:
    """Threads of other processes that want a core this half second: the kernel's count of
    runnable threads (``/proc/loadavg``'s fourth field, this one taken out), sampled every
    25 ms. For the estimates of a run about to start: unlike the busy cores it counts threads
    waiting for a core, and unlike the 1-minute average it does not lag a load that just began
    or ended. The 1-minute average where there is no ``/proc/loadavg``."""
    counts = []
    deadline = time.monotonic() + interval_s
    try:
        while True:
            counts.append(int(loadavg.read_text().split()[3].split("/")[0]) - 1)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.025)
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return None
    return max(0.0, sum(counts) / len(counts))


def busy_cores_now(interval_s: float = 0.2, stat: Path = Path("/proc/stat")) -> float | None:
    """Cores of this process's CPUs that others keep busy, from ``/proc/stat`` over
    ``interval_s`` (this process's own use taken out); None where there is no ``/proc/stat``."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = None

    def sample() -> tuple[int, int, int]:
        busy = total = counted = 0
        for line in stat.read_text().splitlines():
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            if cpus is not None and int(name[3:]) not in cpus:
                continue
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
            counted += 1
        return busy, total, counted

    try:
        busy0, total0, _ = sample()
        own0, t0 = time.process_time(), time.monotonic()
        time.sleep(interval_s)
        busy1, total1, counted = sample()
        own1, t1 = time.process_time(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0 or counted == 0:
        return None
    busy = (busy1 - busy0) / (total1 - total0) * counted
    return max(0.0, busy - (own1 - own0) / max(t1 - t0, 1e-9))


def parse(value: str | int | None, where: str) -> int | None:
    """A thread setting: a positive integer, or None for ``auto`` / ``0`` / empty."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in {"", "auto", "0"}:
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise ThreadsError(f"{where}: must be a positive integer or 'auto' (got {value!r})")
    return n


def cpu_workers(
    requested: int | None, threads: int, side_by_side: int, fit: int | None = None
) -> int:
    """How many steps run at once on a CPU: ``requested`` (``--workers N``), else one per thread
    for as many steps as can run side by side (the training steps of the plan from scratch, or
    its evaluations when it has none: ``scoring.workers.cpu_worker_count``) and as many as
    ``fit`` in memory at once. Each gets ``threads // workers`` threads (at least one)."""
    if requested is not None:
        return requested
    return max(1, min(threads, side_by_side, fit or side_by_side))


def auto_threads(cores: int, load: float | None, ceiling: int | None = None) -> int:
    """The default: the cores not already busy (at least one), at most ``ceiling``."""
    free = cores if load is None else math.floor(cores - load + 0.5)
    return max(1, min(cores, free, ceiling or cores))


def choose(
    requested: str | int | None = None, env: Mapping[str, str] | None = None
) -> ThreadChoice:
    """The thread count for this run: ``requested`` (``--threads``), else the environment, else
    :func:`auto_threads`. Raises :class:`ThreadsError` on a malformed setting."""
    env = os.environ if env is None else env
    cores = usable_cores()
    for source, value in (
        ("--threads", requested),
        (ENV, env.get(ENV)),
        ("OMP_NUM_THREADS", env.get("OMP_NUM_THREADS")),
    ):
        n = parse(value, source)
        if n is not None:
            return ThreadChoice(n, source, cores)
    load = contended_cores(cores)
    return ThreadChoice(auto_threads(cores, load, _torch_default()), "auto", cores, load)


def contended_cores(cores: int) -> float | None:
    """The cores other processes would keep from this run if it ran ``cores`` threads: their
    runnable threads weighed by nice and session as the fair scheduler weighs them
    (:func:`fair_share.sample`), so two nice-19 training workers on two cores keep about 0.03
    of a core and another session's two busy threads one core; :func:`load_average` where
    ``/proc`` does not say."""
    competition = fair_share.sample()
    if competition is None:
        return load_average()
    return max(0.0, cores - cores * competition.share(cores, cores))


def _torch_default() -> int | None:
    """Torch's own default (physical cores), read before anything has changed it."""
    global _TORCH_DEFAULT
    if _TORCH_DEFAULT is None:
        import torch

        _TORCH_DEFAULT = torch.get_num_threads()
    return _TORCH_DEFAULT


_TORCH_DEFAULT: int | None = None


def apply(choice: ThreadChoice) -> None:
    """Set torch's intra-op threads (what every result row then records)."""
    import torch

    _torch_default()
    torch.set_num_threads(choice.threads)


@dataclass(frozen=True)
class CoreShare:
    """The CPU a step gets while a run's ``workers`` (``threads`` each) run side by side on
    ``cores`` that other processes keep ``load`` busy: every runnable thread gets an equal
    share of the cores, one core at most (or, with ``competition``, a share by weight and
    session as the kernel gives it). What the plan's estimates scale by: a step's CPU
    seconds measured in an earlier run take ``cpu seconds / per_step`` of wall time now, and a
    training calibrated alone in the driver (``threads`` threads under ``load``) slows by
    ``slowdown`` once the workers run together."""

    threads: int
    workers: int
    cores: int
    load: float | None = None
    #: the other processes' runnable threads with their weights and groups, where sampled: the
    #: cores split as the kernel's fair scheduler splits them (``fair_share``), not equally
    competition: fair_share.Competition | None = None

    @classmethod
    def now(cls, threads: int, workers: int, cores: int) -> CoreShare:
        """The share under the machine's present load: its runnable threads weighed by nice
        and session (:func:`fair_share.sample`), or counted as equals (:func:`present_load`)
        where ``/proc`` does not say."""
        competition = fair_share.sample()
        if competition is None:
            return cls(threads, workers, cores, present_load())
        return cls(threads, workers, cores, competition.load, competition)

    def _share(self, runnable: float) -> float:
        if self.competition is not None:
            return self.competition.share(runnable, self.cores)
        return min(1.0, self.cores / max(runnable + (self.load or 0.0), 1e-9))

    @property
    def per_step(self) -> float:
        """Cores one step keeps busy while every worker runs."""
        return self.threads * self._share(self.workers * self.threads)

    @property
    def pool_speedup(self) -> float:
        """How much sooner a pool of one process per core (stimulus generation) ends its work
        than one process in the driver beside the same load."""
        return self.cores * self._share(self.cores) / self._share(1)

    @property
    def slowdown(self) -> float:
        """A step's wall time with every worker running over its time alone in the driver."""
        return self._share(self.threads) / self._share(self.workers * self.threads)

    def describe(self) -> str:
        load = "unknown" if self.load is None else f"{self.load:.1f}"
        weighed = ", weighed by nice and session" if self.competition is not None else ""
        return f"{self.per_step:.2f} cores a step ({self.cores} cores, load {load}{weighed})"


@contextmanager
def using(choice: ThreadChoice) -> Iterator[None]:
    """Run a block with ``choice`` applied, restoring the caller's thread count after (the
    Python API does not change a user's torch settings)."""
    import torch

    before = torch.get_num_threads()
    with denormals.flushed():  # before the threads are set, so that they take it
        apply(choice)
        try:
            yield
        finally:
            torch.set_num_threads(before)
