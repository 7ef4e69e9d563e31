"""What a benchmark sees of the core: the job's trained model(s), derived data, evaluation."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .plugins import Registry
from .schemas import PluginRef
from .submission import Component, resolve_component
from .trainer import accuracy, seeded

if TYPE_CHECKING:
    from .planner import Job
    from .training import TrainedModel, TrainingService


class BenchmarkContext:
    def __init__(self, job: Job, service: TrainingService, registry: Registry):
        self.job = job
        self.service = service
        self.registry = registry
        self.used: dict[str, str] = {}  # training key -> weights hash, for provenance

    @property
    def seed(self) -> int:
        return self.job.seed

    @property
    def device(self):
        return self.service.device

    def trained(
        self,
        dataset: Component | None = None,
        model: Component | None = None,
        constraints: tuple[Component, ...] | None = None,
    ) -> TrainedModel:
        """The job's model trained on its dataset (shared with every other benchmark). Override
        ``dataset`` (e.g. a random derivation), ``model`` and/or ``constraints`` (e.g. an
        unconstrained surrogate for black-box attacks) to get another model trained with the same
        recipe and seed. Each is trained once and cached by content."""
        constraints = None if constraints is None else tuple(constraints)
        overrides = {"dataset": dataset, "model": model, "constraints": constraints}
        spec = replace(self.job.training, **{k: v for k, v in overrides.items() if v is not None})
        trained = self.service.trained(spec)
        self.used[spec.key] = trained.weights_hash
        return trained

    @property
    def weights_hash(self) -> str | None:
        """The hash of the job's own trained weights (else of the first model it used)."""
        return self.used.get(self.job.training.key) or next(iter(self.used.values()), None)

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

    def accuracy(self, trained: TrainedModel, split: str = "test") -> float:
        """Accuracy on a split of the model's own data, with the RNG seeded from the job's seed."""
        data = trained.data
        x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
        with seeded(self.seed, self.device):
            return accuracy(trained.module, x, y)
