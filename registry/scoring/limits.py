"""Per-step limits: each submission's ``limits:`` block, merged with the command line's
(``--timeout``, ``--memory-limit``, ``--retries`` win where set)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bioprior.registry.execution.scheduling import Limits, parse_size


def submission_limits(loaded: Sequence[Any]) -> dict[str, Limits]:
    """Each submission's ``limits:`` block as :class:`Limits` (validated by its schema)."""
    out = {}
    for sub in loaded:
        block = sub.submission.limits
        memory = parse_size(block.memory) if block.memory else None
        out[sub.submission.name] = Limits(block.timeout_s, memory, block.retries)
    return out


def has_limit(loaded: Sequence[Any], cli: Limits) -> bool:
    """Whether a wall time or a memory limit applies anywhere (then steps run in processes of
    their own, where it can be enforced)."""
    return any(
        lim.wall_time_s is not None or lim.memory_bytes is not None
        for lim in [cli, *submission_limits(loaded).values()]
    )


def most_generous(limits: list[Limits]) -> Limits:
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
    """A step's limits: those of the submissions it serves, then the command line's."""
    per_submission = submission_limits(loaded)

    def limits_for(step: Any) -> Limits:
        names = getattr(step, "submissions", None) or (getattr(step, "submission", None),)
        own = [per_submission[n] for n in names if n in per_submission]
        return most_generous(own).merged(cli)

    return limits_for
