"""What a benchmark may ask for, torch-free: the planner calls ``Benchmark.trainings(needs)`` with
a :class:`Needs` to collect the trainings a job declares (:mod:`.declare`); the job's
:class:`~bioprior.registry.engine.context.BenchmarkContext` subclasses it, so the same calls in ``run``
name the same specs (same content keys) and get the planned, already-trained models."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bioprior.registry.hooks.loading import Registry
from bioprior.registry.planning.jobs import Job
from bioprior.registry.planning.spec import TrainingSpec
from bioprior.registry.submissions.loading import Component, resolve_component
from bioprior.registry.submissions.schema import PluginRef


class Needs:
    def __init__(self, job: Job, registry: Registry):
        self.job = job
        self.registry = registry

    @property
    def seed(self) -> int:
        return self.job.seed

    def spec(
        self,
        dataset: Component | None = None,
        model: Component | None = None,
        constraints: tuple[Component, ...] | None = None,
    ) -> TrainingSpec:
        """The job's training with ``dataset``, ``model`` and/or ``constraints`` replaced (same
        recipe and seed)."""
        constraints = None if constraints is None else tuple(constraints)
        overrides = {"dataset": dataset, "model": model, "constraints": constraints}
        return replace(self.job.training, **{k: v for k, v in overrides.items() if v is not None})

    def trained(self, dataset=None, model=None, constraints=None) -> Any:
        """At planning: the spec of a training the benchmark needs (declare it by returning it
        from ``trainings``). In ``run`` (the context): that model, trained."""
        return self.spec(dataset, model, constraints)

    def component(self, kind: str, name: str, params: dict[str, Any] | None = None) -> Component:
        """Any registered plugin with validated parameters (e.g. a surrogate model)."""
        errors: list[tuple[tuple, str]] = []
        ref = PluginRef(name=name, params=params or {})
        component = resolve_component(self.registry, kind, ref, (), errors)
        if component is None:
            raise ValueError("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in errors))
        return component

    def derive(
        self, name: str, params: dict[str, Any] | None = None, source: Component | None = None
    ) -> Component:
        """A derivation plugin (e.g. ``gaussian_noise``) applied to ``source`` (default: the job's
        training dataset)."""
        if not self.registry.get("dataset", name).extra.get("derivation"):
            raise ValueError(f"dataset {name!r} is not a derivation")
        component = self.component("dataset", name, params)
        return Component(component.entry, component.params, source or self.job.training.dataset)
