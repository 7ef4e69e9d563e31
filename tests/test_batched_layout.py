"""The members-channels-last layout of batched trainings (registry/batched_layout.py): the same
numbers as torch's own vmap rules, the grouped convolutions fed channels last, plain ops outside
vmap."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from bioprior import create_model
from bioprior.registry.engine import batched_layout

K = 4


def _members(name="small_alexnet", **params):
    out = []
    for seed in range(K):
        torch.manual_seed(seed)
        out.append(create_model(name, in_channels=1, num_classes=10, input_size=16, **params))
    return out


def _batched_forward(base, members, x):
    params, buffers = stack_module_state(members)

    def one(p, b, xb):
        return functional_call(base, (p, b), (xb,))

    return vmap(one, randomness="different")(params, buffers, x), params


@pytest.mark.parametrize(
    "name, params",
    [
        ("small_alexnet", {"width": 0.1, "local_response_norm": False}),
        ("small_inception", {"width": 0.1}),
    ],
)
def test_prepared_base_gives_torchs_numbers_and_gradients(name, params):
    members = _members(name, **params)
    for m in members:
        m.eval()  # BatchNorm from running stats: the same forward for both bases
    x = torch.rand(K, 8, 1, 16, 16)
    plain = copy.deepcopy(members[0])
    prepared = batched_layout.prepare(copy.deepcopy(members[0]))
    assert any(isinstance(m, batched_layout.MembersMaxPool2d) for m in prepared.modules())
    want, p_want = _batched_forward(plain, members, x)
    got, p_got = _batched_forward(prepared, members, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    g_want = torch.autograd.grad(want.square().sum(), list(p_want.values()), allow_unused=True)
    g_got = torch.autograd.grad(got.square().sum(), list(p_got.values()), allow_unused=True)
    for a, b in zip(g_got, g_want, strict=True):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_grouped_convolutions_see_members_channels_last():
    """Each member's conv output keeps the (B, H, W, K, C) layout that merges into one
    channels-last grouped convolution without a copy."""
    base = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, padding=1)
    )
    members = [copy.deepcopy(base) for _ in range(K)]
    prepared = batched_layout.prepare(copy.deepcopy(base))
    out, _ = _batched_forward(prepared, members, torch.rand(K, 5, 3, 8, 8))
    k, _, c, h, w = out.shape
    # physical order B, H, W, K, C: K's stride is C, C's is 1
    assert out.stride(0) == c and out.stride(2) == 1 and out.stride(1) == h * w * k * c


def test_prepare_changes_nothing_outside_vmap():
    torch.manual_seed(0)
    model = create_model("small_alexnet", in_channels=1, num_classes=10, input_size=16, width=0.1)
    prepared = batched_layout.prepare(copy.deepcopy(model))
    x = torch.rand(6, 1, 16, 16, requires_grad=True)
    torch.testing.assert_close(prepared(x), model(x), rtol=0, atol=0)
    (g,) = torch.autograd.grad(prepared(x).sum(), x)
    (want,) = torch.autograd.grad(model(x).sum(), x)
    torch.testing.assert_close(g, want)


def test_pool2d_op_matches_functional_pools():
    x = torch.rand(2, 3, 9, 9)
    got = batched_layout.pool2d(x, "max", [3, 3], [2, 2], [1, 1], False, True)
    torch.testing.assert_close(got, F.max_pool2d(x, 3, 2, 1))
    got = batched_layout.pool2d(x, "avg", [2, 2], [2, 2], [0, 0], True, False)
    torch.testing.assert_close(got, F.avg_pool2d(x, 2, 2, 0, True, False))
    torch.library.opcheck(
        batched_layout.pool2d, (x.requires_grad_(), "max", [3, 3], [2, 2], [1, 1], False, True)
    )


def test_batchnorm_members_train_as_they_train_alone():
    """small_inception (BatchNorm everywhere): each member of a batched training ends with the
    weights and running statistics of its solo training, up to float rounding (the solo
    trainer's layout probe used to fold two images into the running statistics)."""
    from bioprior.registry.engine.batched import train_batched
    from bioprior.registry.engine.trainer import train_model
    from bioprior.registry.submissions.schema import TrainingRecipe

    g = torch.Generator().manual_seed(0)
    # one epoch of six steps: longer, BatchNorm training on random images amplifies rounding
    # (one thread against two differs as much after two epochs of three steps)
    x, y = torch.rand(192, 1, 16, 16, generator=g), torch.randint(0, 10, (192,), generator=g)
    recipe = TrainingRecipe(dataset="digits", epochs=1, batch_size=32, lr=0.05)
    solo = _members("small_inception", width=0.1)[:2]
    batched = [copy.deepcopy(m) for m in solo]
    histories = train_batched(batched, [x, x], [y, y], [recipe] * 2, [0, 1])
    for seed, (a, b) in enumerate(zip(solo, batched, strict=True)):
        h = train_model(a, x, y, recipe, seed)
        assert histories[seed]["loss"] == pytest.approx(h["loss"], rel=1e-3)
        for (name, want), got in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4, msg=name)


def test_batchnorm_shared_by_the_members_falls_back_to_one_call_each():
    """Under a plain vmap over inputs only (one BatchNorm shared by all members) the prepared
    BatchNorm gives torch's numbers and updates the shared running statistics as torch does."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    prepared = batched_layout.prepare(copy.deepcopy(plain))
    x = torch.rand(K, 6, 1, 8, 8)
    got = vmap(prepared)(x)
    want = torch.stack([plain(x[j]) for j in range(K)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(prepared[1].running_mean, plain[1].running_mean)
