"""Any timm architecture as a model: ``timm:<name>``, validated against timm, scored end to end."""

from __future__ import annotations

import pytest
import torch
from conftest import run_cli, tiny_submission
from pydantic import ValidationError
from safetensors.torch import save_file

from bioprior.registry.hooks.loading import UnknownPluginError


def test_members_resolve_and_list(registry):
    entry = registry.get("model", "timm:resnet18")
    assert entry.kind == "model" and entry.version.startswith("timm-")
    assert entry.provider == "bioprior"
    assert registry.has("model", "timm:resnet18") and not registry.has("model", "timm:nope")
    names = [e.name for e in registry.list("model", "timm:resnet1*")]
    assert "timm:resnet18" in names and all(n.startswith("timm:resnet1") for n in names)
    assert "timm" in registry.names("model")  # the family itself is listed once
    with pytest.raises(UnknownPluginError, match="timm:resnet18"):
        registry.get("model", "timm:resnet19")


def test_params_are_validated_against_the_architecture(registry):
    entry = registry.get("model", "timm:test_resnet")
    entry.parse_params({"kwargs": {"drop_path_rate": 0.1}})
    with pytest.raises(ValidationError, match="unexpected keyword argument 'bogus'"):
        entry.parse_params({"kwargs": {"bogus": 1}})
    with pytest.raises(ValidationError, match="safetensors"):
        entry.parse_params({"pretrained_file": "weights.pt"})


def test_geometry_and_fixed_input_size(registry):
    net = registry.get("model", "timm:test_resnet").build({"in_channels": 1, "num_classes": 7})
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 7)
    vit = registry.get("model", "timm:test_vit").build({"input_size": 32})
    assert vit(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_pretrained_file_loads_through_safetensors(registry, tmp_path):
    entry = registry.get("model", "timm:test_resnet")
    torch.manual_seed(0)
    source = entry.build({})
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(1)
    loaded = entry.build({"pretrained_file": str(path)})
    x = torch.rand(2, 3, 32, 32)
    source.eval(), loaded.eval()
    assert torch.allclose(source(x), loaded(x))
    other = tmp_path / "other.safetensors"
    save_file({"unrelated": torch.zeros(3)}, str(other))
    with pytest.raises(ValueError, match="do not fit"):
        entry.build({"pretrained_file": str(other)})
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    assert entry.build({"num_classes": 5, "pretrained_file": str(path)})  # a new head is fine
    del state[next(iter(state))]  # ... a missing body tensor is not
    partial = tmp_path / "partial.safetensors"
    save_file(state, str(partial))
    with pytest.raises(ValueError, match="missing or misshapen: conv1"):
        entry.build({"pretrained_file": str(partial)})


def test_timm_model_scores_end_to_end(bioprior_home, write_submission):
    sub = tiny_submission(
        "timm-tiny",
        model={"name": "timm:test_resnet", "params": {"input_size": 16}},
        constraints=[],
        training={"dataset": "digits", "epochs": 2, "batch_size": 64, "lr": 0.05},
    )
    path = write_submission(sub)
    out = run_cli("score", str(path), "--db", str(bioprior_home / "r.sqlite"))
    assert out.returncode == 0, out.stderr
    res = run_cli("results", "--db", str(bioprior_home / "r.sqlite"), "--format", "csv")
    assert "timm-tiny" in res.stdout and "ok" in res.stdout


def test_bad_timm_names_and_params_exit_2(write_submission):
    bad_name = tiny_submission("bad", model={"name": "timm:resnet19"})
    out = run_cli("validate", str(write_submission(bad_name)))
    assert out.returncode == 2 and "model.name" in out.stderr and "timm:resnet18" in out.stderr
    family = tiny_submission("fam", model={"name": "timm"})
    out = run_cli("validate", str(write_submission(family)))
    assert out.returncode == 2 and "is a family" in out.stderr
    bad_kw = tiny_submission(
        "kw", model={"name": "timm:test_resnet", "params": {"kwargs": {"x": 1}}}
    )
    out = run_cli("validate", str(write_submission(bad_kw)))
    assert out.returncode == 2 and "model.params" in out.stderr and "rejects" in out.stderr
