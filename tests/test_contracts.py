"""The contracts the README promises plugin authors, and the review's defects (each test here
failed before its fix)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bioprior
from bioprior.registry import plugins as plugin_loading
from bioprior.registry.constraint import InputGeometry
from bioprior.registry.entries import PluginEntry, PluginParams
from bioprior.registry.plugins import Registry
from bioprior.registry.submission import InvalidSubmission, validate_submission_dict

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_V1 = {"num_stimuli": 40, "num_neurons": 3, "size": 8, "repeats": 2, "stimuli": "digits"}


def _sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
    )


def _cotraining(layer: str = "conv:2") -> dict:
    return {
        "name": "neural_cotraining",
        "params": {"layer": layer, "data": {"name": "synthetic_v1", "params": TINY_V1}},
    }


# -- defect 1: neural_cotraining on an nn.Sequential -----------------------------------------
def test_neural_cotraining_on_a_sequential_runs_forward_and_trains(registry):
    net = registry.get("constraint", "neural_cotraining").build(_cotraining()["params"])
    model = net.apply(_sequential(), InputGeometry(in_channels=1, input_size=8))
    logits = model(torch.rand(2, 1, 8, 8))  # was: "attach it with attach_objective"
    assert logits.shape == (2, 10)


def test_score_a_sequential_with_neural_cotraining_end_to_end(tmp_path):
    rows = bioprior.score(
        _sequential(),
        constraints=[_cotraining()],
        training={"dataset": "digits", "epochs": 1, "batch_size": 64},
        benchmarks=["neural_predictivity"],
        device="cpu",
        db=tmp_path / "r.sqlite",
    )
    (row,) = rows
    assert row["status"] == "ok", row["error"]
    assert row["metrics"]["readout"] is True and row["metrics"]["neurons"] == 3


# -- defect 2: NeuralDataRef validated against the registry passed in ------------------------
def test_neural_data_ref_is_validated_against_the_given_registry(registry):
    explicit = Registry().load_entry_points()
    plugin_loading.set_registry(None)  # the global registry is not loaded
    sub = {
        "name": "unknown-neural-data",
        "model": {"name": "vgg19_bn_fcn", "params": {"width": 0.0625}},
        "constraints": [
            {"name": "neural_cotraining", "params": {"data": {"name": "no_such_recording"}}}
        ],
        "training": {"dataset": "digits", "epochs": 1},
        "benchmarks": ["neural_predictivity"],
    }
    with pytest.raises(InvalidSubmission, match="no_such_recording"):
        validate_submission_dict(sub, explicit)
    assert plugin_loading._REGISTRY is None  # validation did not load the global one


# -- defect 3: Registry.extended shares nothing with the original ----------------------------
def test_extended_registry_does_not_share_the_plugin_manager_or_member_cache(registry):
    extra = PluginEntry(name="extra_model", kind="model", factory=lambda p: nn.Identity())
    copy = registry.extended(extra)
    assert copy.has("model", "extra_model") and not registry.has("model", "extra_model")
    copy.get("model", "timm:resnet18")  # fills the copy's member cache
    assert ("model", "timm:resnet18") not in registry._members
    assert copy.pm is not registry.pm

    class LatePlugin:
        @bioprior.hookimpl
        def register_models(self, register):
            register(name="late_model", factory=lambda p: nn.Identity(), params=PluginParams)

    copy.add_plugin(LatePlugin(), provider="late")
    assert copy.has("model", "late_model") and not registry.has("model", "late_model")
    assert len(registry.pm.get_plugins()) == len(copy.pm.get_plugins()) - 1
