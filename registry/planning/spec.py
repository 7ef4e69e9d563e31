"""What determines a trained model (:class:`TrainingSpec`), torch-free so the planner can key,
dedupe and group trainings without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from bioprior.registry.base.hashing import content_hash
from bioprior.registry.submissions.loading import Component
from bioprior.registry.submissions.schema import TrainingRecipe

#: recipe fields that may differ between members of one batched training (per-member tensors)
PER_MEMBER_RECIPE = frozenset({"lr", "momentum", "weight_decay", "schedule"})


def root_dataset(c: Component) -> Component:
    """The source dataset under a chain of derivations (``subset(gaussian_noise(digits))`` ->
    ``digits``): the one walk shared by the preflight, the data cache and the planner."""
    while c.source is not None:
        c = c.source
    return c


def dataset_label(c: Component) -> str:
    return f"{c.entry.name}({dataset_label(c.source)})" if c.source is not None else c.entry.name


@dataclass(frozen=True)
class TrainingSpec:
    """Everything that determines a trained model."""

    model: Component
    constraints: tuple[Component, ...]
    recipe: TrainingRecipe
    dataset: Component
    seed: int

    def identity(self) -> dict[str, Any]:
        return {
            "model": self.model.spec,
            "constraints": [c.spec for c in self.constraints],
            "recipe": self.recipe.model_dump(
                mode="json",
                exclude={"dataset"} | ({"augment"} if not self.recipe.augment else set()),
            ),
            "dataset": self.dataset.spec,
            "seed": self.seed,
        }

    @cached_property
    def key(self) -> str:
        return content_hash(self.identity())

    @property
    def label(self) -> str:
        constraints = "".join(
            f" +{c.entry.name}({','.join(f'{k}={v}' for k, v in c.params.model_dump().items())})"
            for c in self.constraints
        )
        return (
            f"{self.model.entry.name}{constraints} on {dataset_label(self.dataset)} "
            f"(seed {self.seed})"
        )

    @property
    def epochs_label(self) -> str:
        return f"{self.recipe.epochs} epochs"

    @property
    def batch_group(self) -> str | None:
        """Trainings with the same group train together as one batched model (``None``: this one
        trains alone). Members may differ in seed, dataset (same source and shape), learning-rate
        hyperparameters and the parameters a constraint lists as ``extra["batch"]``; the model and
        every constraint must declare ``extra["batch"]`` (a list, maybe empty)."""
        parts: list[Any] = []
        for c in (self.model, *self.constraints):
            varying = c.entry.extra.get("batch")
            if varying is None:
                return None
            params = c.params.model_dump(mode="json", exclude=set(varying))
            parts.append([c.entry.name, c.entry.version, params])
        recipe = self.recipe.model_dump(mode="json", exclude={"dataset", *PER_MEMBER_RECIPE})
        return content_hash([parts, recipe, root_dataset(self.dataset).spec])

    @property
    def why_alone(self) -> str:
        """Why this training cannot be batched (for the plan), or ''."""
        names = [
            c.entry.name for c in (self.model, *self.constraints) if "batch" not in c.entry.extra
        ]
        return f"not batchable: {', '.join(names)}" if names else ""
