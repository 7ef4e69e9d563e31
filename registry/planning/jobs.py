"""Jobs: submissions x sweep x seeds x benchmarks -> one :class:`Job` per evaluation, keyed by
content. Pure data (no torch); the steps that run them are planned in :mod:`.steps`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from bioprior.registry.base.hashing import content_hash
from bioprior.registry.hooks.entries import load_attribute
from bioprior.registry.hooks.loading import Registry
from bioprior.registry.planning.needs import Needs
from bioprior.registry.planning.spec import TrainingSpec
from bioprior.registry.submissions.loading import Component, LoadedSubmission


@dataclass(frozen=True)
class Job:
    """One evaluation: a benchmark on a submission's variant and seed."""

    submission: str
    variant: dict[str, Any]
    seed: int
    training: TrainingSpec
    benchmark: Component

    def identity(self) -> dict[str, Any]:
        return {"training": self.training.identity(), "benchmark": self.benchmark.spec}

    @cached_property
    def key(self) -> str:
        return content_hash(self.identity())

    @cached_property
    def instance(self) -> Any:
        """The benchmark, built once per job (the planner declares with it, the runner runs it).
        Built without the torchvision shim (``entry.build`` puts it in place, importing torch):
        benchmark factories live in torch-free modules; the runner installs the shim."""
        entry = self.benchmark.entry
        factory = entry.factory if callable(entry.factory) else load_attribute(entry.factory)
        return factory(self.benchmark.params)

    @property
    def plugin_versions(self) -> dict[str, str]:
        versions: dict[str, str] = {}
        for c in (
            self.training.model,
            *self.training.constraints,
            self.training.dataset,
            self.benchmark,
        ):
            versions.update(c.versions)
        return versions

    @property
    def label(self) -> str:
        variant = ",".join(f"{k.split('.')[-1]}={v}" for k, v in self.variant.items())
        return f"{self.submission}[{variant}] seed={self.seed} {self.benchmark.entry.name}".replace(
            "[]", ""
        )

    def declare(self, registry: Registry) -> tuple[TrainingSpec, ...]:
        """The trainings this job's benchmark declares, deduped, in order (kept on the job)."""
        if "trainings" not in self.__dict__:
            specs = self.instance.trainings(Needs(self, registry))
            unique = {s.key: s for s in specs}
            object.__setattr__(self, "trainings", tuple(unique.values()))
        return self.__dict__["trainings"]

    @property
    def declared(self) -> tuple[TrainingSpec, ...]:
        """The declared trainings (after :meth:`declare`; before it, the job's own)."""
        return self.__dict__.get("trainings", (self.training,))

    @property
    def training_keys(self) -> frozenset[str]:
        return frozenset(s.key for s in self.declared)


def plan(submissions: Iterable[LoadedSubmission]) -> list[Job]:
    jobs: dict[tuple[str, str], Job] = {}
    for loaded in submissions:
        name = loaded.submission.name
        for variant in loaded.variants:
            for seed in variant.submission.seeds:
                spec = TrainingSpec(
                    model=variant.model,
                    constraints=tuple(variant.constraints),
                    recipe=variant.submission.training,
                    dataset=variant.dataset,
                    seed=seed,
                )
                for bench in variant.benchmarks:
                    job = Job(name, variant.assignments, seed, spec, bench)
                    jobs.setdefault((name, job.key), job)
    return list(jobs.values())
