"""The contracts the documentation promises plugin authors, and regression tests for past
defects (each test here failed before its fix)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bioprior
from bioprior.registry.contracts.constraint import InputGeometry
from bioprior.registry.hooks import loading as plugin_loading
from bioprior.registry.hooks.entries import PluginEntry, PluginParams
from bioprior.registry.hooks.loading import Registry
from bioprior.registry.submissions.loading import InvalidSubmission, validate_submission_dict

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


# -- contracts ---------------------------------------------------------------------------------
def test_one_kinds_list_and_one_hook_per_kind():
    from typing import get_args

    from bioprior.registry.hooks import entries
    from bioprior.registry.hooks import specs as hookspecs

    assert entries.KINDS == get_args(entries.Kind)
    assert sorted(hookspecs.HOOK_KINDS.values()) == sorted(entries.KINDS)
    for hook in hookspecs.HOOK_KINDS:  # each is a real hook specification
        assert callable(getattr(hookspecs, hook))


def test_requires_model_params_is_stated_once_on_the_constraint_class(registry):
    from bioprior.plugins.capacity import Bottleneck

    entry = registry.get("constraint", "bottleneck")
    assert entry.requires_model_params == Bottleneck.requires_model_params == ("first_conv_width",)
    assert "requires_model_params" not in entry.extra
    sub = {
        "name": "needs-first-conv",
        "model": {"name": "resnet18_cifar", "params": {"width": 0.125}},
        "constraints": [{"name": "bottleneck"}],
        "training": {"dataset": "digits", "epochs": 1},
        "benchmarks": ["memorization"],
    }
    with pytest.raises(InvalidSubmission, match="needs model parameter.*first_conv_width"):
        validate_submission_dict(sub, registry)


def test_apply_receives_the_input_geometry_of_the_images(registry, monkeypatch):
    """The trainer gives every constraint's apply the geometry of the data (what the model sees)."""
    from bioprior.plugins.capacity import PrecisionLimit

    seen = []
    original = PrecisionLimit.apply

    def spy(self, module, geometry):
        seen.append(geometry)
        return original(self, module, geometry)

    monkeypatch.setattr(PrecisionLimit, "apply", spy)
    rows = bioprior.score(
        {
            "name": "geometry",
            "model": {"name": "small_alexnet", "params": {"width": 0.1, "input_size": 8}},
            "constraints": [{"name": "precision_limit"}],
            "training": {"dataset": "digits", "epochs": 1, "batch_size": 128},
            "benchmarks": [{"name": "memorization"}],
        },
        device="cpu",
    )
    assert {r["status"] for r in rows} == {"ok"}
    assert seen and all(g == InputGeometry(1, 8, 10, "small_alexnet") for g in seen)


def test_a_constraint_after_vone_probes_the_front_end_with_the_images_geometry():
    """vone_block's configure gives the model the bottleneck's channels; flexible_layer after it
    measured its learned thresholds on that geometry (stashed from configure) and failed on the
    front end, which takes the images. apply's geometry is the images': it works."""
    (row,) = bioprior.score(
        {
            "name": "vone-then-flexible",
            "model": {
                "name": "small_alexnet",
                "params": {"width": 0.1, "input_size": 16, "local_response_norm": False},
            },
            "constraints": [
                {
                    "name": "vone_block",
                    "params": {"simple_channels": 8, "complex_channels": 8, "visual_degrees": 1.0},
                },
                {"name": "flexible_layer", "params": {"layers": "all", "threshold": "learned"}},
            ],
            "training": {"dataset": "digits", "epochs": 1, "batch_size": 128},
            "benchmarks": [{"name": "memorization"}],
        },
        device="cpu",
    )
    assert row["status"] == "ok", row["error"]
    assert row["metrics"]["natural_test_acc"] > row["metrics"]["chance"]


def test_feature_target_is_validated_against_the_given_registry(registry):
    """neural_similarity's 'features' control names a model: looked up in the registry the
    submission is validated with (here one with an in-memory model), not the global one."""
    from bioprior.registry.api import module_entry

    entry = module_entry(_sequential())
    explicit = Registry().load_entry_points().extended(entry)
    plugin_loading.set_registry(None)
    sub = {
        "name": "feature-target",
        "model": {"name": "small_alexnet", "params": {"width": 0.1, "input_size": 8}},
        "constraints": [
            {
                "name": "neural_similarity",
                "params": {
                    "data": {"name": "synthetic_v1", "params": TINY_V1},
                    "features": {"model": entry.name, "layer": "1"},
                },
            }
        ],
        "training": {"dataset": "digits", "epochs": 1},
        "benchmarks": ["memorization"],
    }
    validate_submission_dict(sub, explicit)  # was: unknown model 'module:Sequential'
    assert plugin_loading._REGISTRY is None
