"""The planner: submissions x sweep x seeds x benchmarks -> jobs keyed by content.

Pure bookkeeping (no torch): what to run, what is already done, and an estimate of the work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .hashing import content_hash
from .submission import Component, LoadedSubmission
from .training import TrainingSpec


@dataclass(frozen=True)
class Job:
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


@dataclass
class PlanSummary:
    total: int
    done: int
    todo: list[Job] = field(default_factory=list)
    trainings: int = 0
    epochs: int = 0

    def describe(self) -> str:
        return (
            f"{self.total} jobs: {self.done} already done, {len(self.todo)} to run; "
            f"about {self.trainings} trainings, {self.epochs} epochs"
        )


def summarize(jobs: list[Job], done: set[tuple[str, str]]) -> PlanSummary:
    todo = [j for j in jobs if (j.submission, j.key) not in done]
    trainings: dict[str, int] = {}
    for job in todo:
        extra = job.benchmark.entry.build(job.benchmark.params).trainings()
        trainings[job.training.key] = max(trainings.get(job.training.key, 0), extra)
    recipes = {j.training.key: j.training.recipe for j in todo}
    epochs = sum(n * recipes[k].epochs for k, n in trainings.items())
    return PlanSummary(len(jobs), len(jobs) - len(todo), todo, sum(trainings.values()), epochs)
