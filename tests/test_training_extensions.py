"""The trainer's extension points: training objectives attached by constraints, parameters
exempt from weight decay, seeded batch augmentation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bioprior.registry.engine.trainer import augment_batch, make_optimizer, train_model
from bioprior.registry.submissions.schema import TrainingRecipe
from bioprior.registry.toolkit.objective import (
    Batch,
    ObjectiveContext,
    TrainingObjective,
    attach_objective,
    exclude_from_weight_decay,
    objectives,
)


class PullToTarget(TrainingObjective):
    """A learned scalar pulled to ``target`` by an extra loss term; records what the trainer
    told it."""

    def __init__(self, target: float):
        super().__init__()
        self.target = target
        self.value = nn.Parameter(torch.zeros(()))
        self.context: ObjectiveContext | None = None
        self.calls = 0

    def prepare(self, ctx: ObjectiveContext) -> None:
        self.context = ctx

    def total_loss(self, model: nn.Module, task_loss: torch.Tensor, batch: Batch) -> torch.Tensor:
        assert batch.logits.shape == (len(batch.x), 3)
        self.calls += 1
        return task_loss + (self.value - self.target) ** 2

    def epoch_metrics(self) -> dict[str, float]:
        return {"pull_value": float(self.value.detach())}


def tiny_data(n: int = 64):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 4, 4, generator=gen)
    y = torch.randint(0, 3, (n,), generator=gen)
    return x, y


def recipe(**kw) -> TrainingRecipe:
    base = {"dataset": "digits", "epochs": 30, "batch_size": 16, "lr": 0.1, "momentum": 0.0}
    return TrainingRecipe.model_validate({**base, **kw})


def test_objective_is_prepared_added_to_the_loss_and_saved():
    torch.manual_seed(0)
    net = attach_objective(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), PullToTarget(2.0))
    x, y = tiny_data()
    history = train_model(net, x, y, recipe(), seed=3)
    objective = objectives(net)[0]
    assert objective.context.channels == 1 and objective.context.size == 4
    assert objective.context.steps_per_epoch == 4 and objective.context.seed == 3
    assert objective.calls == 30 * 4
    assert float(objective.value) == pytest.approx(2.0, abs=1e-3)
    assert history["pull_value"][-1] == pytest.approx(2.0, abs=1e-3)
    assert "objectives.0.value" in net.state_dict()
    assert attach_objective(net, PullToTarget(1.0)) is net and len(objectives(net)) == 2
    with pytest.raises(RuntimeError, match="attach_objective"):
        objective(x)


def test_excluded_parameters_get_no_weight_decay():
    net = nn.Linear(4, 2)
    exclude_from_weight_decay(net.bias)
    opt = make_optimizer(net, recipe(weight_decay=0.5))
    groups = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert groups[id(net.weight)] == 0.5 and groups[id(net.bias)] == 0.0
    # and in training: an exempt parameter with no gradient is not shrunk
    net.bias.data.fill_(1.0)
    net.bias.requires_grad_(True)
    opt.zero_grad()
    (net.weight.sum() * 0).backward()
    net.bias.grad = torch.zeros_like(net.bias)
    opt.step()
    assert torch.allclose(net.bias, torch.ones(2))


def test_no_weight_decay_names_follow_timm_convention(registry):
    net = registry.get("model", "timm:test_vit").build({"input_size": 32})
    named = dict(net.named_parameters())
    opt = make_optimizer(net, recipe(weight_decay=0.1))
    exempt = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    listed = [n for n in net.no_weight_decay() if n in named]  # timm also lists absent tokens
    assert "pos_embed" in listed and all(id(named[n]) in exempt for n in listed)
    assert id(named["head.weight"]) not in exempt


def test_augmentation_flips_and_translates_reproducibly():
    x = torch.arange(4 * 16, dtype=torch.float).view(4, 1, 4, 4)
    flipped = augment_batch(x, ["hflip"], torch.Generator().manual_seed(0))
    for a, b in zip(flipped, x, strict=True):
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    assert not torch.equal(flipped, x) and not torch.equal(flipped, x.flip(-1))
    crops = augment_batch(x, ["crop"], torch.Generator().manual_seed(1))
    again = augment_batch(x, ["crop"], torch.Generator().manual_seed(1))
    assert torch.equal(crops, again) and crops.shape == x.shape
    for a, b in zip(crops, x, strict=True):  # a shifted window of the zero-padded image
        padded = nn.functional.pad(b, (1, 1, 1, 1))
        windows = [padded[:, i : i + 4, j : j + 4] for i in range(3) for j in range(3)]
        assert any(torch.equal(a, w) for w in windows)


def test_augmentation_enters_the_content_key_only_when_used(registry):
    from bioprior.registry.engine.service import TrainingSpec
    from bioprior.registry.submissions.loading import resolve_component
    from bioprior.registry.submissions.schema import PluginRef

    errors: list = []
    model = resolve_component(registry, "model", PluginRef(name="small_alexnet"), (), errors)
    data = resolve_component(registry, "dataset", PluginRef(name="digits"), (), errors)
    specs = [TrainingSpec(model, (), recipe(**kw), data, 0) for kw in ({}, {"augment": ["hflip"]})]
    plain, flipped = (s.identity()["recipe"] for s in specs)
    assert "augment" not in plain and flipped["augment"] == ["hflip"]
    assert specs[0].key != specs[1].key
