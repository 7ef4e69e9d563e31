"""Models and constraints against tsvetkov2020's definitions, on small tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bioprior import create_model
from bioprior.plugins.capacity.nn import GaussianNoise, Quantize
from bioprior.registry.toolkit.layers import HiddenActivation


def _constrained(registry, model: nn.Module, *specs: tuple[str, dict]) -> nn.Module:
    for name, params in specs:
        model = registry.get("constraint", name).build(params).apply(model)
    return model


@pytest.mark.parametrize("name", ["small_alexnet", "small_inception"])
@pytest.mark.parametrize("geometry", [(1, 10, 8), (3, 100, 32), (3, 2, 28)])
def test_models_take_any_geometry(name, geometry):
    cin, classes, size = geometry
    model = create_model(name, in_channels=cin, num_classes=classes, input_size=size, width=0.1)
    assert model(torch.rand(2, cin, size, size)).shape == (2, classes)


def test_paper_widths():
    alex = create_model("small_alexnet")
    inc = create_model("small_inception")
    assert alex.features[0].out_channels == 200 and inc.features[0][0].out_channels == 96
    assert create_model("small_alexnet", first_conv_width=8).features[0].out_channels == 8


def test_bottleneck_configures_first_conv(registry):
    bottleneck = registry.get("constraint", "bottleneck").build({"width": 2})
    params = bottleneck.configure("small_inception", {"first_conv_width": None, "width": 1.0})
    model = create_model("small_inception", **params)
    assert model.features[0][0].out_channels == 2
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_internal_noise_on_every_hidden_activation_not_output(registry):
    model = _constrained(
        registry, create_model("small_alexnet", width=0.1), ("internal_noise", {"sigma": 0.5})
    )
    hidden = [m for m in model.modules() if isinstance(m, HiddenActivation)]
    assert len(hidden) == 4  # two conv and two FC activations; the output layer has none
    assert all(isinstance(h.post[0], GaussianNoise) for h in hidden)
    assert isinstance(model.classifier[-1], nn.Linear)
    x = torch.rand(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))  # off at inference, like Keras' GaussianNoise
    model.train()
    assert not torch.equal(model(x), model(x))


def test_internal_noise_std_and_at_inference():
    noise = GaussianNoise(0.6, at_inference=True).eval()
    out = noise(torch.zeros(200_000))
    assert abs(out.std().item() - 0.6) < 0.01 and abs(out.mean().item()) < 0.01


def test_activation_swap_and_composition_order(registry):
    model = _constrained(
        registry,
        create_model("small_alexnet", width=0.1),
        ("activation", {"function": "sigmoid"}),
        ("internal_noise", {"sigma": 0.1}),
        ("precision_limit", {"bits": 2, "low": 0.0, "high": 1.0}),
    )
    hidden = [m for m in model.modules() if isinstance(m, HiddenActivation)]
    assert all(isinstance(h.act, nn.Sigmoid) for h in hidden)
    assert [type(p) for p in hidden[0].post] == [GaussianNoise, Quantize]  # order as listed
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_precision_limit_levels_and_straight_through_gradient():
    q = Quantize(bits=2, low=0.0, high=3.0)
    x = torch.tensor([-1.0, 0.4, 0.6, 1.49, 2.6, 9.0], requires_grad=True)
    y = q(x)
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0, 3.0, 3.0]
    y.sum().backward()
    assert x.grad.tolist() == [
        0.0,
        1.0,
        1.0,
        1.0,
        1.0,
        0.0,
    ]  # identity inside the range, clipped outside


def test_precision_limit_rejects_empty_range(registry):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="high must be greater than low"):
        registry.get("constraint", "precision_limit").parse_params({"low": 1.0, "high": 1.0})
