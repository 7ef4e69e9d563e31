"""Pair "members-conv": the convolutions of the batched-K pair alone, forward and backward, as a
batched training runs them (each layer's K members as one grouped convolution on the
members-channels-last layout of :mod:`bioprior.registry.engine.batched_layout`) against each member's
convolutions in turn (channels last, as the solo trainer runs them). Same models, widths, batch,
K and precision as test_batched_training.py.

Where convolutions are most of a step, this pair bounds the batched-K pair: members trained
together gain little more than their convolutions do. On 2 AVX-512 cores in fp32 (no AMX),
width-0.1 small_alexnet's convolutions ran at 45-96% of the fp32 matmul rate one member at a
time in three runs (ceilings of 1.0-2.2x; the machine's matmul rate itself drifts between runs) and
grouped at 0.83-1.25x of that speed; small_inception's ran at 9-20% in turn and 1.5-1.9x faster
grouped (oneDNN's grouped kernels reached 17-35%). Either way the convolutions keep K = 8 far
from 4x there."""

from __future__ import annotations

import copy

import pytest
import torch
from perfkit import DEVICE, interleave, sync
from test_batched_training import MODELS, PRECISION, K
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from bioprior import create_model
from bioprior.registry.engine import batched_layout
from bioprior.registry.engine.batched_autocast import ConvAutocast

pytestmark = pytest.mark.perf
BATCH = 64  # the batched pair's recipe batch size


def _autocast():
    return torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=PRECISION == "bf16")


def _layers(name: str) -> list[tuple[nn.Conv2d, tuple[int, ...], bool]]:
    """Each convolution of the model with its input's shape and whether that input needs a
    gradient (not for the first layer, whose input is the data)."""
    torch.manual_seed(0)
    net = create_model(name, in_channels=1, num_classes=10, input_size=16, **MODELS[name])
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def note(module, args):
        shapes.setdefault(module, tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(note) for m in net.modules() if isinstance(m, nn.Conv2d)]
    net(torch.rand(BATCH, 1, 16, 16))
    for h in hooks:
        h.remove()
    return [(conv, shape, i > 0) for i, (conv, shape) in enumerate(shapes.items())]


def _flops(name: str) -> float:
    """Training FLOPs of the K members' convolutions in one step: three times one forward."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        for conv, shape, _ in _layers(name):
            conv(torch.rand(*shape))
    return 3.0 * K * counter.get_total_flops()


def _members(conv: nn.Conv2d) -> list[nn.Module]:
    out = []
    for seed in range(K):
        member = copy.deepcopy(conv)
        torch.manual_seed(seed)
        member.reset_parameters()
        out.append(member.to(DEVICE, memory_format=torch.channels_last))
    return out


def _grouped(name: str):
    """One forward and backward of every layer, the K members as one grouped convolution."""

    def forward(base, params, x):
        with _autocast(), ConvAutocast():
            return vmap(lambda p, xb: functional_call(base, p, (xb,)))(params, x)

    steps = []
    for conv, shape, input_grad in _layers(name):
        members = _members(conv)
        base = batched_layout.prepare(nn.Sequential(copy.deepcopy(members[0])))
        params, _ = stack_module_state(members)
        params = {f"0.{k}": p.detach().requires_grad_() for k, p in params.items()}
        # the layout each layer's input has in a batched training (the first: after its copy):
        # (K, B, C, H, W) stored as (B, H, W, K, C)
        b, c, h, w = shape
        x = torch.rand(b, h, w, K, c, device=DEVICE).permute(3, 0, 4, 1, 2)
        with torch.no_grad():  # the timed work is the members' own convolutions
            out = forward(base, params, x)
            for j in (0, K - 1):
                with _autocast():
                    want = members[j](x[j])
                torch.testing.assert_close(out[j], want, rtol=2e-2, atol=2e-2)
        steps.append((base, params, x.requires_grad_(input_grad)))
    return _timed(steps, forward, lambda step: [step[2], *step[1].values()])


def _timed(steps, forward, leaves):
    """``run()``: each step's forward, then its backward from a fixed gradient, gradients reset
    first as the trainers do (``set_to_none``)."""
    grads = [torch.rand_like(forward(*step)) for step in steps]

    def run():
        for step, grad in zip(steps, grads, strict=True):
            for leaf in leaves(step):
                leaf.grad = None
            forward(*step).backward(grad)
        sync()

    return run


def _in_turn(name: str):
    """The reference: each member's convolution forward and backward, one member after another."""
    steps = []
    for conv, shape, input_grad in _layers(name):
        for member in _members(conv):
            x = torch.rand(*shape, device=DEVICE).contiguous(memory_format=torch.channels_last)
            steps.append((member, x.requires_grad_(input_grad)))

    def forward(member, x):
        with _autocast():
            return member(x)

    return _timed(steps, forward, lambda step: [step[1], *step[0].parameters()])


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.benchmark(group="members-conv")
def test_grouped_members_conv(benchmark, record, name):
    interleave(benchmark, _grouped(name), _in_turn(name), rounds=20, warmup=3)
    record(f"members-conv-{name}-K{K}", "engine", K * BATCH, _flops(name), PRECISION)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.benchmark(group="members-conv")
def test_members_conv_in_turn(benchmark, record, name):
    benchmark.pedantic(_in_turn(name), rounds=20, iterations=1, warmup_rounds=3)
    record(f"members-conv-{name}-K{K}", "reference", K * BATCH, _flops(name), PRECISION)
