"""A job's benchmark, built, and the trainings it declares.

A :class:`~bioprior.registry.planning.jobs.Job` is plain data; what is built from it lives here.
:func:`build_benchmark` calls the benchmark's factory (the planner declares with the benchmark,
the runner runs it); :func:`declared_trainings` asks the benchmark which trainings the job needs
(``Benchmark.trainings(needs)``), deduped by content key. Declaring twice gives the same specs,
so a caller that declares the same jobs again (the planner, then the runner) passes a cache it
owns: a :data:`Declared` dict, job key -> trainings (the trainings depend on the job's content
alone, so jobs of two submissions with one key share them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bioprior.registry.hooks.entries import load_attribute
from bioprior.registry.hooks.loading import Registry
from bioprior.registry.planning.jobs import Job
from bioprior.registry.planning.needs import Needs
from bioprior.registry.planning.spec import TrainingSpec

#: job key -> the trainings its benchmark declared (deduped, in order)
Declared = dict[str, tuple[TrainingSpec, ...]]


def build_benchmark(job: Job) -> Any:
    """The job's benchmark, built by its factory with the job's parameters. Built without the
    torchvision shim (``entry.build`` puts it in place, importing torch): benchmark factories
    live in torch-free modules; the runner installs the shim before it runs one."""
    entry = job.benchmark.entry
    factory = entry.factory if callable(entry.factory) else load_attribute(entry.factory)
    return factory(job.benchmark.params)


def declared_trainings(
    job: Job,
    registry: Registry,
    cache: Declared | None = None,
    benchmark: Any = None,
) -> tuple[TrainingSpec, ...]:
    """The trainings ``job``'s benchmark declares, deduped by key, in order. Looked up in (and
    added to) ``cache`` when one is given; declared with ``benchmark`` when given (else one is
    built)."""
    if cache is not None and job.key in cache:
        return cache[job.key]
    bench = build_benchmark(job) if benchmark is None else benchmark
    unique = {s.key: s for s in bench.trainings(Needs(job, registry))}
    trainings = tuple(unique.values())
    if cache is not None:
        cache[job.key] = trainings
    return trainings


def training_keys(trainings: Iterable[TrainingSpec]) -> frozenset[str]:
    """The content keys of some trainings (what an evaluation may ask the service for)."""
    return frozenset(s.key for s in trainings)


__all__ = ["Declared", "build_benchmark", "declared_trainings", "training_keys"]
