"""The cores a run's threads get beside other runnable threads, as Linux's fair scheduler
(CFS) shares them: by weight, not by count.

A thread's weight falls by 1.25x per nice level (1024 at nice 0, about 15 at nice 19). Where
autogroups are on (``/proc/sys/kernel/sched_autogroup_enabled``, the default of desktop and
many server kernels, for processes in the root CPU cgroup), each session (``setsid``: a
terminal, a ``nohup`` job started with it) is one scheduling entity of its autogroup's weight
(``/proc/<pid>/autogroup``'s nice): two sessions get half the CPU each whatever their thread
counts, and a background session at autogroup nice 19 takes about 1.5% of a core from a
foreground one. Counting runnable threads as equals (``threads.present_load``) misses both: a
niced job counted as full load doubled an estimate, and a second session that ran two threads
against the plan's one got half the cores, not two thirds.

:func:`sample` reads the runnable threads of other processes (``/proc/<pid>/task/<tid>/stat``:
state R, nice; their autogroup) several times over half a second; :meth:`Competition.share` is
the cores one of this run's threads gets when ``runnable`` of them run, by water-filling: the
cores split between the top-level entities (autogroups, or threads where there are none) by
weight, none taking more cores than it has runnable threads, then inside this run's group
between its threads the same way, averaged over the samples. Not modelled: cgroup CPU weights
and quotas other than the run's own (``threads.usable_cores``), per-core run queues and their
balancing, and that threads on separate cores still share caches and memory bandwidth.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

NICE_0_WEIGHT = 1024.0
PROC = Path("/proc")


def nice_weight(nice: float) -> float:
    """CFS's load weight of a thread (or autogroup) at ``nice``: 1024 at 0, / 1.25 a level."""
    return NICE_0_WEIGHT / 1.25**nice


@dataclass(frozen=True)
class Group:
    """A top-level scheduling entity with runnable threads: an autogroup (``weight`` its own,
    ``threads`` its runnable threads' weights) or, without autogroups, one thread."""

    weight: float
    threads: tuple[float, ...]


@dataclass(frozen=True)
class Competition:
    """What other processes ran while :func:`sample` looked: per sample, the runnable threads
    in this process's own group (``same``: their weights) and the other groups."""

    samples: tuple[tuple[tuple[float, ...], tuple[Group, ...]], ...]
    own_thread_weight: float = NICE_0_WEIGHT
    #: None: this process is in no autogroup (a service's, started outside any session): its
    #: threads, and ``same``, compete one by one beside the other groups
    own_group_weight: float | None = NICE_0_WEIGHT

    @property
    def load(self) -> float:
        """Runnable threads of other processes, on average (what an equal-share count sees)."""
        if not self.samples:
            return 0.0
        counts = [len(same) + sum(len(g.threads) for g in other) for same, other in self.samples]
        return sum(counts) / len(counts)

    def share(self, runnable: float, cores: int) -> float:
        """Cores (at most one) one of ``runnable`` threads of this run gets, on average."""
        if not self.samples:
            return min(1.0, cores / max(runnable, 1e-9))
        shares = [self._share_in(same, other, runnable, cores) for same, other in self.samples]
        return sum(shares) / len(shares)

    def _share_in(
        self, same: tuple[float, ...], other: tuple[Group, ...], runnable: float, cores: int
    ) -> float:
        ours = max(1, round(runnable))
        mine = (self.own_thread_weight,) * ours + same
        others = [(g.weight, float(len(g.threads))) for g in other]
        if self.own_group_weight is None:  # one by one at the top level
            return water_fill(float(cores), [(w, 1.0) for w in mine] + others)[0]
        own_cores = water_fill(float(cores), [(self.own_group_weight, len(mine)), *others])[0]
        return water_fill(own_cores, [(w, 1.0) for w in mine])[0]


def water_fill(capacity: float, claims: list[tuple[float, float]]) -> list[float]:
    """Split ``capacity`` in proportion to each claim's weight, none above its cap (a
    ``(weight, cap)`` pair); what a capped claim leaves goes to the others."""
    share = [0.0] * len(claims)
    open_ = [i for i, (w, cap) in enumerate(claims) if w > 0 and cap > 0]
    left = capacity
    while open_ and left > 1e-12:
        total = sum(claims[i][0] for i in open_)
        capped = [i for i in open_ if left * claims[i][0] / total >= claims[i][1]]
        if not capped:
            for i in open_:
                share[i] = left * claims[i][0] / total
            break
        for i in capped:
            share[i] = claims[i][1]
            left -= claims[i][1]
        open_ = [i for i in open_ if i not in capped]
    return share


def autogroups_on(proc: Path = PROC) -> bool:
    """Whether the kernel groups this process's threads by session: autogroups enabled and
    the process in the root CPU cgroup (elsewhere its cgroup is the group)."""
    try:
        if (proc / "sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
            return False
        lines = (proc / "self/cgroup").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        _, controllers, path = line.split(":", 2)
        cpu = "cpu" in controllers.split(",") or controllers == ""
        if cpu and path.strip() not in ("/", ""):
            return False
    return True


def _autogroup(pid: str, proc: Path) -> tuple[str, float] | None:
    """``(autogroup id, its nice)`` of process ``pid``, or None: in no autogroup (the kernel
    shows nothing for the root one: kernel threads, services started outside a session), or
    gone."""
    try:
        name, _, nice = (proc / pid / "autogroup").read_text().split()
        return name, float(nice)
    except (OSError, ValueError):
        return None


def runnable_threads(own_pid: int, proc: Path = PROC) -> list[tuple[str, float]]:
    """``(pid, nice)`` of every runnable thread of the other processes, now."""
    out = []
    with os.scandir(proc) as entries:
        pids = [e.name for e in entries if e.name.isdigit() and int(e.name) != own_pid]
    for pid in pids:
        try:
            with os.scandir(proc / pid / "task") as tasks:
                tids = [t.name for t in tasks]
            for tid in tids:
                stat = (proc / pid / "task" / tid / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                if fields[0] == "R":  # fields from the state (3rd) on: nice is the 19th
                    out.append((pid, float(fields[16])))
        except (OSError, ValueError, IndexError):
            continue
    return out


def sample(
    interval_s: float = 0.5, samples: int = 10, proc: Path = PROC, own_pid: int | None = None
) -> Competition | None:
    """The runnable threads of other processes, ``samples`` times over ``interval_s`` (fewer
    where reading them takes longer), with their weights and groups; None where ``/proc``
    cannot be read."""
    own_pid = os.getpid() if own_pid is None else own_pid
    grouped = autogroups_on(proc)
    try:
        own_nice = float(os.getpriority(os.PRIO_PROCESS, 0))
    except (AttributeError, OSError):
        own_nice = 0.0
    own_group = _autogroup(str(own_pid), proc) if grouped else None
    taken: list[tuple[tuple[float, ...], tuple[Group, ...]]] = []
    start = time.monotonic()
    for k in range(samples):
        if taken and time.monotonic() - start >= interval_s:
            break  # a machine of many threads: fewer samples, not a longer look
        try:
            running = int((proc / "loadavg").read_text().split()[3].split("/")[0])
            threads = runnable_threads(own_pid, proc) if running > 1 else []
        except (OSError, ValueError, IndexError):
            return None
        same: list[float] = []
        groups: dict[str, tuple[float, list[float]]] = {}
        for pid, nice in threads:
            weight = nice_weight(nice)
            group = _autogroup(pid, proc) if grouped else None
            if group is None and own_group is not None:  # an entity alone beside our group
                groups[f"thread-{pid}-{len(groups)}"] = (weight, [weight])
            elif group is None or (own_group is not None and group[0] == own_group[0]):
                same.append(weight)  # our group's, or one by one at the top level as ours
            else:
                groups.setdefault(group[0], (nice_weight(group[1]), []))[1].append(weight)
        taken.append((tuple(same), tuple(Group(w, tuple(t)) for w, t in groups.values())))
        pause = start + interval_s * (k + 1) / samples - time.monotonic()
        if pause > 0 and k + 1 < samples:
            time.sleep(pause)
    return Competition(
        tuple(taken),
        own_thread_weight=nice_weight(own_nice),
        own_group_weight=None if own_group is None else nice_weight(own_group[1]),
    )
