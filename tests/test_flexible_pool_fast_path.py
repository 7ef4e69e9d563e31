"""The Flexible Layer's max-pooling branch where no gradient reaches its input (the FMNIST
network's first layer, every evaluation under ``no_grad``) runs as running maxima of shifted
slices: the same values as ``max_pool2d``, bit for bit, so a training with it ends at the same
weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bioprior.plugins.evanson.nn import FlexibleSmallNet
from bioprior.plugins.flexible_layer import nn as flexible


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(5, 12),
    st.integers(5, 12),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_shifted_max_is_max_pool2d(n, c, h, w, kh, kw, seed, quantized):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    if quantized:  # ties, zeros and infinities, as in images with a flat background
        x = torch.round(x * 2) / 2
        x[x > 1.4] = float("inf")
        x[x < -1.4] = float("-inf")
    expected = F.max_pool2d(x, (kh, kw), stride=1)
    assert torch.equal(flexible.shifted_max(x, (kh, kw)), expected)


def _table2_net(threshold: str) -> nn.Module:
    torch.manual_seed(0)
    net = FlexibleSmallNet()
    net.features[0] = flexible.FlexibleLayer(
        net.features[0], threshold=threshold, init=0.5, input_size=28
    )
    return net


def _train(threshold: str, fast: bool, monkeypatch) -> dict[str, torch.Tensor]:
    if not fast:
        monkeypatch.setattr(flexible, "_shiftable", lambda pool: False)
    net = _table2_net(threshold)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.rand(32, 1, 28, 28, generator=g)
        x[x < 0.4] = 0.0  # ties in every window of the background
        y = torch.randint(0, 10, (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    monkeypatch.undo()
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_a_training_ends_at_the_same_weights_with_the_fast_pooling(monkeypatch):
    for threshold in ("uniform", "learned"):
        fast = _train(threshold, True, monkeypatch)
        reference = _train(threshold, False, monkeypatch)
        assert fast.keys() == reference.keys()
        for key in fast:
            assert torch.equal(fast[key], reference[key]), (threshold, key)


def test_an_input_that_needs_its_gradient_keeps_max_pool2d(monkeypatch):
    """Attacks differentiate with respect to the image: a tie's gradient goes to one input, as
    max-pooling gives it, not split as ``torch.maximum`` would."""
    net = _table2_net("learned").eval()
    x = torch.zeros(2, 1, 28, 28, requires_grad=True)  # every window a tie
    net(x).sum().backward()
    reference = x.grad.clone()
    x.grad = None
    monkeypatch.setattr(flexible, "_shiftable", lambda pool: False)
    net(x).sum().backward()
    assert torch.equal(x.grad, reference)
