"""registry.layers.LocalResponseNorm gives exactly torch's numbers (so the models that use it,
Zhang et al.'s small AlexNet, train as before under the same keys), forward and backward."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bioprior import create_model
from bioprior.registry.toolkit.layers import LocalResponseNorm


def _both(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, autocast: bool):
    out = []
    for layer in (
        nn.LocalResponseNorm(size, alpha, beta, k),
        LocalResponseNorm(size, alpha, beta, k),
    ):
        leaf = x.detach().clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = layer(leaf)
        grad = torch.linspace(-1, 1, y.numel()).view_as(y).to(y.dtype)
        y.backward(grad)
        out.append((y, leaf.grad))
    return out


@settings(max_examples=400, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 6), st.integers(1, 6)),
    size=st.integers(1, 6),
    alpha=st.floats(1e-5, 1.0),
    beta=st.floats(0.1, 1.5),
    k=st.floats(0.5, 2.0),
    dtype=st.sampled_from(["fp32", "fp64", "bf16-autocast"]),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_fast_lrn_is_bit_identical_to_torchs(
    shape, size, alpha, beta, k, dtype, channels_last, seed
):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 4
    x = x.to({"fp32": torch.float32, "fp64": torch.float64, "bf16-autocast": torch.bfloat16}[dtype])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    (y_ref, g_ref), (y, g) = _both(x, size, alpha, beta, k, autocast=dtype == "bf16-autocast")
    assert y.dtype == y_ref.dtype and torch.equal(y, y_ref)
    assert torch.equal(g, g_ref)


def test_a_small_alexnet_trains_to_the_same_weights_with_it():
    """One SGD step of the LRN AlexNet: the same loss and the same gradients as with torch's."""
    results = []
    for fast in (False, True):
        torch.manual_seed(0)
        net = create_model("small_alexnet", in_channels=1, num_classes=10, input_size=16, width=0.1)
        lrn = [m for m in net.modules() if isinstance(m, nn.LocalResponseNorm)]
        assert len(lrn) == 2 and all(isinstance(m, LocalResponseNorm) for m in lrn)
        if not fast:
            for m in lrn:
                m.forward = nn.LocalResponseNorm.forward.__get__(m)
        x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
        loss = nn.functional.cross_entropy(net(x), torch.arange(8) % 10)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in net.parameters()]))
    (loss_ref, grads_ref), (loss, grads) = results
    assert torch.equal(loss, loss_ref)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_ref, strict=True))


@pytest.mark.parametrize("device", ["meta"])
def test_elsewhere_it_is_torchs_own_forward(device):
    x = torch.empty(2, 8, 4, 4, device=device)
    assert LocalResponseNorm(4)(x).shape == x.shape
