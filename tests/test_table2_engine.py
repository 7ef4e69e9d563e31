"""Batched members' SGD (torch's fused kernel where they share their hyperparameters, as on CUDA;
the broadcast path where they differ) gives each member what torch.optim.SGD gives it alone; and
the Table 2 network batches its seeds."""

from __future__ import annotations

import pytest
import torch

from bioprior.registry.engine.batched import BatchedOptimizer
from bioprior.registry.submissions.schema import TrainingRecipe

RECIPE = TrainingRecipe(
    dataset={"name": "digits"},
    epochs=3,
    batch_size=32,
    optimizer="sgd",
    lr=0.01,
    momentum=0.9,
    weight_decay=0.006,
    schedule={"name": "step", "step_size": 1, "gamma": 0.7},
)


@pytest.mark.parametrize("momentum", [0.9, 0.0])
@pytest.mark.parametrize("lrs", [(0.05, 0.05, 0.05), (0.05, 0.02, 0.1)])
@pytest.mark.parametrize("fused", [True, False])
def test_batched_sgd_equals_torch_sgd_per_member(momentum, lrs, fused):
    """Shared hyperparameters take the fused kernel, differing ones the broadcast path: both give
    each member what torch.optim.SGD gives it alone (decayed and exempt parameters), up to the
    rounding of a vectorized kernel's tail (a member's elements sit elsewhere in the stacked
    tensor than in its own)."""
    k = len(lrs)
    recipes = [RECIPE.model_copy(update={"momentum": momentum, "lr": lr}) for lr in lrs]
    gen = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(k, 20, 30, generator=gen), "b": torch.randn(k, 20, generator=gen)}
    stacked = {name: t.clone() for name, t in start.items()}
    optimizer = BatchedOptimizer(stacked, recipes, exempt={"b"}, fused=fused)
    optimizer.lr = torch.tensor(lrs)
    members = []
    for j in range(k):
        w, b = start["w"][j].clone(), start["b"][j].clone()
        groups = [{"params": [w]}, {"params": [b], "weight_decay": 0.0}]
        members.append(
            (w, b, torch.optim.SGD(groups, lr=lrs[j], momentum=momentum, weight_decay=0.006))
        )
    for _ in range(6):
        gw, gb = torch.randn(k, 20, 30, generator=gen), torch.randn(k, 20, generator=gen)
        stacked["w"].grad, stacked["b"].grad = gw.clone(), gb.clone()
        optimizer.step()
        for j, (w, b, sgd) in enumerate(members):
            w.grad, b.grad = gw[j].clone(), gb[j].clone()
            sgd.step()
    for j, (w, b, _) in enumerate(members):
        torch.testing.assert_close(stacked["w"][j], w, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(stacked["b"][j], b, rtol=1e-6, atol=1e-7)


def test_table2_seeds_plan_as_one_batch(registry):
    """The Table 2 network and the Flexible Layer declare batching: with --batch 10 the ten
    seeds of each threshold mode are one step (modes differ in structure: four steps)."""
    from conftest import ROOT

    from bioprior.registry.planning.jobs import plan
    from bioprior.registry.planning.steps import summarize
    from bioprior.registry.submissions.loading import load_submission

    loaded = load_submission(ROOT / "submissions" / "evanson-table2-fmnist.yaml", registry)
    jobs = plan([loaded])
    summary = summarize(jobs, set(), registry, batch_limit=lambda spec, size: 10)
    assert [len(s.members) for s in summary.train_steps] == [10, 10, 10, 10]
    alone = summarize(jobs, set(), registry, batch_limit=lambda spec, size: 1)
    assert len(alone.train_steps) == 40


def test_input_conv_only_models_train_nchw(registry):
    """The Table 2 network (one Conv2d(1, 12, 5) before a 6,912-wide linear layer) stays NCHW,
    solo and batched: channels_last would copy its activations back at the flatten; a deep conv
    model still switches."""
    from bioprior import create_model
    from bioprior.registry.engine import batched_layout
    from bioprior.registry.engine.trainer import channels_last

    sample = torch.rand(2, 1, 28, 28)
    small = create_model("flexible_small_net")
    assert not channels_last(small, sample)
    assert small.features[0].weight.is_contiguous()
    prepared = batched_layout.prepare(create_model("flexible_small_net"))
    assert not prepared.features[0]._forward_pre_hooks
    alexnet = create_model("small_alexnet", in_channels=1, input_size=28, width=0.25)
    assert channels_last(alexnet, sample)
    prepared = batched_layout.prepare(
        create_model("small_alexnet", in_channels=1, input_size=28, width=0.25)
    )
    assert any(m._forward_pre_hooks for m in prepared.modules() if isinstance(m, torch.nn.Conv2d))


def test_families_submission_reuses_the_table2_trainings(registry):
    """evanson-table2-fmnist-families.yaml scores Table 2's forty trainings: the same training
    keys, so scored after Table 2 it trains nothing; its corruption baseline is the Table 2
    baseline (threshold conv), not a forty-first training."""
    from conftest import ROOT

    from bioprior.registry.planning.jobs import plan
    from bioprior.registry.submissions.loading import load_submission

    def trainings(name: str) -> set[str]:
        loaded = load_submission(ROOT / "submissions" / f"{name}.yaml", registry)
        return {job.training.key for job in plan([loaded])}

    table2 = trainings("evanson-table2-fmnist")
    assert len(table2) == 40 and trainings("evanson-table2-fmnist-families") == table2
    from bioprior.registry.planning.steps import summarize

    loaded = load_submission(ROOT / "submissions" / "evanson-table2-fmnist-families.yaml", registry)
    summary = summarize(plan([loaded]), set(), registry, batch_limit=lambda spec, size: 1)
    assert {s.members[0].key for s in summary.train_steps} == table2  # the baselines included


@pytest.mark.parametrize(
    ("variant", "size"), [("baseline", 16), ("flexible", 16), ("baseline", 28)]
)
def test_hmax_seeds_train_as_batched_members(variant, size):
    """HMAX (Fig. 4A) declares batching: two seeds as batched members end where each seed's own
    training ends, up to float rounding (at 16 px S2 convolves; at 28 px, the paper's geometry,
    it slides the small C1 maps over the prototypes). Not the flexible variant at 28 px: there
    the S2 thresholds' sharp sigmoid (s = 50) makes rounding differences of 1e-3 in two epochs,
    with either way of computing S2."""
    from bioprior import create_model
    from bioprior.registry.engine.batched import train_batched
    from bioprior.registry.engine.trainer import Normalized, train_model

    small = {"input_size": 16, "bands": 4, "patch_sizes": (2, 4), "num_prototypes": 8}
    if size == 28:
        small = {"num_prototypes": 8}

    def build(seed: int) -> torch.nn.Module:  # built anew, as the scorer does (a deep copy
        torch.manual_seed(seed)  # would drop the thresholds' no-weight-decay tag)
        net = create_model("hmax", variant=variant, **small)
        return Normalized(net, torch.tensor([0.3]), torch.tensor([0.3]))

    members, alone = [build(0), build(1)], [build(0), build(1)]
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 1, size, size), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    recipe = RECIPE.model_copy(update={"epochs": 2})
    histories = train_batched(members, [x, x], [y, y], [recipe] * 2, [0, 1])
    assert all(h["batched_members"] == 2 for h in histories)
    for seed, (batched, solo) in enumerate(zip(members, alone, strict=True)):
        train_model(solo, x, y, recipe, seed)
        for (name, a), b in zip(batched.state_dict().items(), solo.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("threshold", ["conv", "uniform", "learned"])
def test_table2_seeds_train_as_batched_members(registry, threshold):
    """Ten seeds of a Table 2 mode train as one batch on a GPU: two seeds as batched members end
    where each seed's own training ends, up to float rounding (learned thresholds without
    weight decay in both)."""
    from bioprior.registry.contracts.constraint import InputGeometry, apply_constraint
    from bioprior.registry.engine.batched import train_batched
    from bioprior.registry.engine.trainer import Normalized, train_model

    def build(seed: int) -> torch.nn.Module:
        model = registry.get("model", "flexible_small_net")
        constraint = registry.get("constraint", "flexible_layer")
        torch.manual_seed(seed)
        net = model.build(model.params.model_validate({"width": 0.5, "input_size": 16}))
        layer = constraint.build(constraint.params.model_validate({"threshold": threshold}))
        geometry = InputGeometry.of("flexible_small_net", {"in_channels": 1, "input_size": 16})
        return Normalized(
            apply_constraint(layer, net, geometry), torch.tensor([0.3]), torch.tensor([0.3])
        )

    members, alone = [build(0), build(1)], [build(0), build(1)]
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 1, 16, 16), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (256,), generator=gen)
    train_batched(members, [x, x], [y, y], [RECIPE] * 2, [0, 1])
    for seed, (batched, solo) in enumerate(zip(members, alone, strict=True)):
        train_model(solo, x, y, RECIPE, seed)
        for (name, a), b in zip(batched.state_dict().items(), solo.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
