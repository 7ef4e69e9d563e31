"""bf16 batched trainings run their convolutions in bf16 (registry/batched_autocast.py): under
vmap torch's convolution batching rule runs below autocast, so without ConvAutocast a member's
conv2d stayed fp32 while its history said bf16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap
from torch.utils._python_dispatch import TorchDispatchMode

from bioprior import create_model
from bioprior.registry.engine.batched import train_batched
from bioprior.registry.engine.batched_autocast import ConvAutocast
from bioprior.registry.engine.trainer import bf16_kernels, train_model
from bioprior.registry.submissions.schema import TrainingRecipe

K = 3


def _under_vmap(fn, *args):
    def member(*a):
        with ConvAutocast():
            return fn(*a)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        return vmap(member)(*args)


@pytest.mark.parametrize(
    "conv, weight_shape",
    [(F.conv2d, (4, 3, 3, 3)), (F.conv1d, (4, 3, 3)), (F.conv_transpose2d, (3, 4, 3, 3))],
)
def test_each_members_convolution_is_the_autocast_one(conv, weight_shape):
    torch.manual_seed(0)
    x = torch.randn(K, 2, 3, *([8] * (len(weight_shape) - 2)))
    w = torch.randn(K, *weight_shape)
    b = torch.randn(K, weight_shape[1] if conv is F.conv_transpose2d else weight_shape[0])
    got = _under_vmap(lambda xi, wi, bi: conv(xi, wi, bi, padding=1), x, w, b)
    assert got.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch.stack([conv(x[j], w[j], b[j], padding=1) for j in range(K)])
    assert want.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


def test_gradients_reach_the_fp32_parameters():
    x = torch.randn(K, 2, 3, 8, 8)
    w = torch.randn(K, 4, 3, 3, 3, requires_grad=True)
    out = _under_vmap(lambda xi, wi: F.conv2d(xi, wi, padding=1), x, w)
    out.float().square().sum().backward()
    assert w.grad is not None and w.grad.dtype == torch.float32 and w.grad.abs().sum() > 0


def test_a_layer_that_turns_autocast_off_stays_fp32():
    def fp32_layer(xi, wi):
        with torch.autocast("cpu", enabled=False):
            return F.conv2d(xi, wi)

    out = _under_vmap(fp32_layer, torch.randn(K, 2, 3, 8, 8), torch.randn(K, 4, 3, 3, 3))
    assert out.dtype == torch.float32


class _ConvDtypes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.seen.add(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.skipif(not bf16_kernels(torch.device("cpu")), reason="this CPU has no bf16 kernels")
def test_a_bf16_batched_training_convolves_in_bf16_as_its_members_would_alone(monkeypatch):
    monkeypatch.setenv("BIOPRIOR_CPU_BF16", "1")  # bf16 even where fp32 would be faster
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:256], dtype=torch.float32)[:, None] / 16
    y = torch.tensor(digits.target[:256])
    recipe = TrainingRecipe(dataset="digits", epochs=2, batch_size=32, lr=0.05, precision="bf16")

    def members():
        out = []
        for seed in range(K):
            torch.manual_seed(seed)
            out.append(create_model("small_alexnet", in_channels=1, num_classes=10, input_size=8))
        return out

    solo = [train_model(m, x, y, recipe, seed) for seed, m in enumerate(members())]
    with _ConvDtypes() as seen:
        batched = train_batched(members(), [x] * K, [y] * K, [recipe] * K, list(range(K)))
    assert seen.seen == {torch.bfloat16}
    for s, b in zip(solo, batched, strict=True):
        assert b["autocast"] == s["autocast"] == "bf16"
        assert b["loss"] == pytest.approx(s["loss"], rel=0.05)
