"""Memorization of random data (tsvetkov2020, Methods and Exp. 1-2; Zhang et al. 2017, Sec. 2).

The submission's model, with its constraints and recipe, is trained on the natural dataset and,
separately, on a random derivative of it (Gaussian random images by default). A biologically
plausible model learns the natural data and fails to learn the random data.

Summary score (documented choice; tsvetkov2020 reports the two accuracies side by side)::

    learned   = clip((natural_test_acc  - chance) / (1 - chance), 0, 1)
    memorized = clip((random_train_acc  - chance) / (1 - chance), 0, 1)
    score     = learned * (1 - memorized)

so 1 means natural data fully generalized and random data at chance; 0 means either natural
data not learned or random data memorized perfectly. Accuracies are measured in evaluation mode
(internal noise off unless the constraint keeps it at inference); the last epoch's running
training accuracy (noise on, as Keras reports it and the paper plots) is reported as well.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from bioprior.plugin import (
    Benchmark,
    BenchmarkResult,
    PluginParams,
    UnknownPluginError,
    get_registry,
    hookimpl,
)

TSVETKOV2020 = "Tsvetkov, Malhotra & Bowers (2020), CogSci; Zhang et al. (2017), ICLR"
RandomKind = Literal["gaussian_noise", "random_labels", "shuffled_pixels"]


def memorization_score(natural_test: float, random_train: float, chance: float) -> float:
    learned = min(max((natural_test - chance) / (1 - chance), 0.0), 1.0)
    memorized = min(max((random_train - chance) / (1 - chance), 0.0), 1.0)
    return learned * (1 - memorized)


class MemorizationParams(PluginParams):
    random: RandomKind = Field(
        default="gaussian_noise", description="Random derivative to train on."
    )
    random_params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters of that derivation."
    )

    @model_validator(mode="after")
    def _random_params_fit(self) -> MemorizationParams:
        """``random_params`` checked against the derivation's own schema when the submission is
        validated (an unknown key, a wrong type), not first when its training is planned."""
        if not self.random_params:
            return self
        try:
            entry = get_registry().get("dataset", self.random)
        except UnknownPluginError:  # a missing derivation is reported where it is used
            return self
        try:
            entry.params.model_validate(self.random_params)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            known = ", ".join(sorted(entry.params.model_fields))
            what = (
                f"unknown key {where!r} for {self.random} (known: {known})"
                if first["type"] == "extra_forbidden"
                else f"{where}: {first['msg']}"
            )
            raise ValueError(f"random_params: {what}") from None
        return self


class Memorization(Benchmark):
    def trainings(self, needs):
        return [needs.trained(), needs.trained(self._random(needs))]

    def _random(self, needs):
        return needs.derive(self.params.random, self.params.random_params)

    def run(self, ctx) -> BenchmarkResult:
        natural = ctx.trained()
        random = ctx.trained(self._random(ctx))
        chance = 1.0 / natural.data.num_classes
        metrics = {
            "natural_train_acc": ctx.accuracy(natural, "train"),
            "natural_test_acc": ctx.accuracy(natural, "test"),
            "random_train_acc": ctx.accuracy(random, "train"),
            "natural_train_acc_running": _last(natural.history, "accuracy"),
            "random_train_acc_running": _last(random.history, "accuracy"),
            "chance": chance,
            "random": self.params.random,
        }
        score = memorization_score(metrics["natural_test_acc"], metrics["random_train_acc"], chance)
        return BenchmarkResult(metrics, score)

    def preview(self, images, seed: int):
        """The natural images and their random derivative, as the model is trained on them."""
        return {
            "natural": images,
            self.params.random: _derived(
                self.params.random, self.params.random_params, images, seed
            ),
        }


class CapacityParams(PluginParams):
    classes: list[int] = Field(
        default=[2, 5, 10], min_length=1, description="Numbers of classes (Exp. 2: 10 to 2)."
    )
    examples_per_class: list[int] = Field(
        default=[10, 100, 1000],
        min_length=1,
        description="Training examples per class (Exp. 2: 1000 to 10).",
    )
    random: RandomKind = Field(
        default="gaussian_noise", description="Random derivative to train on."
    )


class MemorizationCapacity(Benchmark):
    """tsvetkov2020 Exp. 2: natural and random training accuracy over a grid of classes x examples
    per class. Score: the mean of the per-cell memorization scores (on training accuracy)."""

    def trainings(self, needs):
        return [needs.trained(d) for cell in self._cells(needs) for d in cell[2:]]

    def _cells(self, needs):
        for k in self.params.classes:
            for n in self.params.examples_per_class:
                subset = needs.derive("subset", {"num_classes": k, "examples_per_class": n})
                yield k, n, subset, needs.derive(self.params.random, source=subset)

    def run(self, ctx) -> BenchmarkResult:
        cells, scores = [], []
        for k, n, subset, random_data in self._cells(ctx):
            natural = ctx.trained(subset)
            random = ctx.trained(random_data)
            cell = {
                "classes": k,
                "examples_per_class": n,
                "natural_train_acc": ctx.accuracy(natural, "train"),
                "natural_test_acc": ctx.accuracy(natural, "test"),
                "random_train_acc": ctx.accuracy(random, "train"),
                "chance": 1.0 / k,
            }
            cells.append(cell)
            scores.append(
                memorization_score(cell["natural_train_acc"], cell["random_train_acc"], 1.0 / k)
            )
        return BenchmarkResult({"cells": cells}, sum(scores) / len(scores))


def _derived(name: str, params: dict[str, Any], images, seed: int):
    import torch

    from bioprior.plugin import ImageData, get_registry

    labels = torch.arange(len(images)) % 10
    data = ImageData("preview", images, labels, images, labels, num_classes=10)
    return get_registry().get("dataset", name).build(params, source=data, seed=seed).train_x


def _last(history: dict[str, Any], key: str) -> float | None:
    values = history.get(key) or []
    return values[-1] if values else None


@hookimpl
def register_benchmarks(register):
    register(
        name="memorization",
        factory=Memorization,
        params=MemorizationParams,
        version="1",
        citation=TSVETKOV2020,
        description="Natural vs random-data learning (score: learns natural, not random).",
        extra={"score": "learned (natural test) x (1 - memorized (random train)), from chance"},
    )
    register(
        name="memorization_capacity",
        factory=MemorizationCapacity,
        params=CapacityParams,
        version="1",
        citation=TSVETKOV2020,
        description="Exp. 2 capacity sweep: classes x examples per class.",
        extra={"score": "mean over the grid cells of learned x (1 - memorized), train acc."},
    )
