"""Jobs: submissions x sweep x seeds x benchmarks -> one :class:`Job` per evaluation, keyed by
content. Plain data (no torch, nothing built): the benchmark a job runs and the trainings it
declares come from :mod:`.declare`; the steps that run jobs are planned in :mod:`.steps`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from bioprior.registry.base.hashing import content_hash
from bioprior.registry.planning.spec import TrainingSpec
from bioprior.registry.submissions.loading import Component, LoadedSubmission


def cost_signature(identity: dict[str, Any]) -> str:
    """The part of a job's identity its evaluation time depends on: the benchmark (name,
    version, parameters), the model and the dataset; not the constraints, the recipe or the
    seed (jobs that differ only there take about as long). The same from a job and from a
    stored row's ``spec``, so that earlier runs time later ones."""
    training = identity["training"]
    return content_hash(
        {
            "benchmark": identity["benchmark"],
            "model": training.get("model"),
            "dataset": training.get("dataset"),
        }
    )


def constraints_signature(identity: dict[str, Any]) -> str:
    """A job's constraints (names, versions, parameters): among earlier runs of its cost
    signature, those of the same constraints time it best (a Flexible Layer whose max-pooling
    branch blends in takes longer than one that only convolves)."""
    return content_hash({"constraints": identity["training"].get("constraints")})


def stimuli_signature(identity: dict[str, Any]) -> str:
    """What a benchmark's cached stimuli depend on besides the seed: the benchmark and the
    dataset (not the model: every model of a seed shares them)."""
    training = identity["training"]
    return content_hash({"benchmark": identity["benchmark"], "dataset": training.get("dataset")})


@dataclass(frozen=True)
class Job:
    """One evaluation: a benchmark on a submission's variant and seed. Plain data: its identity,
    content key, label and plugin versions (build its benchmark with
    :func:`~.declare.build_benchmark`, its trainings with :func:`~.declare.declared_trainings`)."""

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
    def cost_signature(self) -> str:
        """What its running time depends on (:func:`cost_signature`)."""
        return cost_signature(self.identity())

    @property
    def constraints_signature(self) -> str:
        """Its constraints (:func:`constraints_signature`)."""
        return constraints_signature(self.identity())

    @property
    def stimuli_signature(self) -> str:
        """What its cached stimuli depend on besides the seed (:func:`stimuli_signature`)."""
        return stimuli_signature(self.identity())

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
