"""What a benchmark sees of the core: the job's trained model(s), derived data, evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .plugins import Registry
from .schemas import PluginRef
from .submission import Component, resolve_component
from .trainer import accuracy

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

    def trained(self, dataset: Component | None = None) -> TrainedModel:
        """The job's model trained on its dataset (shared with every other benchmark), or on
        ``dataset`` instead (e.g. a random derivation). Trained once, cached by content."""
        spec = self.job.training if dataset is None else self.job.training.with_dataset(dataset)
        trained = self.service.trained(spec)
        self.used[spec.key] = trained.weights_hash
        return trained

    @property
    def weights_hash(self) -> str | None:
        """The hash of the job's own trained weights (else of the first model it used)."""
        return self.used.get(self.job.training.key) or next(iter(self.used.values()), None)

    def derive(
        self, name: str, params: dict[str, Any] | None = None, source: Component | None = None
    ) -> Component:
        """A derivation plugin (e.g. ``gaussian_noise``) applied to ``source`` (default: the job's
        training dataset)."""
        entry = self.registry.get("dataset", name)
        if not entry.extra.get("derivation"):
            raise ValueError(f"dataset {name!r} is not a derivation")
        errors: list[tuple[tuple, str]] = []
        component = resolve_component(
            self.registry, "dataset", PluginRef(name=name, params=params or {}), (), errors
        )
        if component is None:
            raise ValueError("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in errors))
        return Component(component.entry, component.params, source or self.job.training.dataset)

    @staticmethod
    def accuracy(trained: TrainedModel, split: str = "test") -> float:
        data = trained.data
        x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
        return accuracy(trained.module, x, y)
