"""Plugin loading: entry points, provider stamping, isolation of broken plugins, queries."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
from conftest import run_cli
from pydantic import BaseModel, Field

from bioprior.registry.hooks.entries import PluginEntry, PluginParams
from bioprior.registry.hooks.loading import Registry, UnknownPluginError
from bioprior.registry.hooks.specs import hookimpl


class P(PluginParams):
    x: int = Field(default=1, description="An x.")


def _plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return module


def _model_plugin(name: str, model_name: str):
    def register_models(register):
        register(name=model_name, factory=lambda p: p.x, params=P, version="2", citation="c")

    return _plugin(name, register_models=register_models)


def test_builtin_entry_points_register_with_provider(registry):
    names = {(e.kind, e.name) for e in registry.list()}
    for expected in [
        ("model", "small_alexnet"),
        ("model", "small_inception"),
        ("constraint", "internal_noise"),
        ("constraint", "bottleneck"),
        ("constraint", "activation"),
        ("constraint", "precision_limit"),
        ("dataset", "digits"),
        ("dataset", "cifar10"),
        ("dataset", "gaussian_noise"),
        ("benchmark", "memorization"),
        ("benchmark", "memorization_capacity"),
    ]:
        assert expected in names
    entry = registry.get("model", "small_alexnet")
    assert entry.provider == "bioprior" and entry.provider_version
    assert registry.failures == []


def test_queries_glob_and_close_matches(registry):
    assert [e.name for e in registry.list("model", "small_*")] == [
        "small_alexnet",
        "small_inception",
    ]
    with pytest.raises(UnknownPluginError) as info:
        registry.get("model", "small_alexnt")
    assert "small_alexnet" in info.value.suggestions and "did you mean" in str(info.value)


def test_duplicate_names_both_providers_named_neither_kept():
    """Two third parties providing one name: neither wins (tests/test_precedence.py for more)."""
    reg = Registry(strict=False, prefer={})
    reg.add_plugin(_model_plugin("a", "net"), provider="pkg-a", provider_version="1.0")
    reg.add_plugin(_model_plugin("b", "net"), provider="pkg-b", provider_version="2.0")
    assert "net" not in reg.names("model")
    (failure,) = reg.failures
    assert "pkg-a 1.0" in failure.error and "pkg-b 2.0" in failure.error and failure.name == "net"


def test_one_distribution_registering_a_name_twice_keeps_the_first():
    reg = Registry(strict=False, prefer={})
    reg.add_plugin(_model_plugin("a", "net"), provider="pkg-a", provider_version="1.0")
    reg.add_plugin(_model_plugin("a2", "net"), provider="pkg-a", provider_version="1.0")
    assert reg.get("model", "net").provider == "pkg-a"
    (failure,) = reg.failures
    assert "registered twice by pkg-a 1.0" in failure.error


def test_invalid_schema_is_recorded_and_others_still_load():
    class NoDescription(PluginParams):
        y: int = 3

    class NotStrict(BaseModel):
        y: int = Field(default=3, description="y")

    def register_models(register):
        register(name="bad1", factory=lambda p: p, params=NoDescription)
        register(name="bad2", factory=lambda p: p, params=NotStrict)
        register(name="good", factory=lambda p: p, params=P)

    reg = Registry(strict=False)
    reg.add_plugin(_plugin("m", register_models=register_models), provider="pkg")
    assert reg.names("model") == ["good"]
    errors = " | ".join(f.error for f in reg.failures)
    assert "Field(description" in errors and "extra='forbid'" in errors


def test_misspelled_hook_is_caught_by_check_pending():
    def register_modles(register):  # typo
        register(name="x", factory=lambda p: p, params=P)

    reg = Registry(strict=False)
    reg.add_plugin(_plugin("typo", register_modles=register_modles), provider="pkg")
    reg.add_plugin(_model_plugin("ok", "fine"), provider="pkg2")
    assert reg.names("model") == ["fine"]
    assert "register_modles" in reg.failures[0].error


def test_hook_that_raises_is_isolated_and_strict_mode_reraises(monkeypatch):
    def register_models(register):
        raise RuntimeError("boom")

    reg = Registry(strict=False)
    reg.add_plugin(_plugin("boom", register_models=register_models), provider="pkg")
    assert "boom" in reg.failures[0].error
    monkeypatch.setenv("BIOPRIOR_STRICT_PLUGINS", "1")
    with pytest.raises(RuntimeError, match="boom"):
        Registry().add_plugin(_plugin("boom2", register_models=register_models), provider="pkg")


def test_entry_point_that_fails_to_import_is_recorded(monkeypatch):
    from importlib.metadata import EntryPoint

    broken = EntryPoint(name="broken", value="bioprior_no_such_module_xyz", group="bioprior")
    good = EntryPoint(name="models", value="bioprior.plugins.zhang2017", group="bioprior")
    reg = Registry(strict=False).load_entry_points([broken, good])
    assert reg.names("model") == ["small_alexnet", "small_inception"]
    assert (
        reg.failures[0].entry_point == "broken" and "ModuleNotFoundError" in reg.failures[0].error
    )


def test_register_rejects_kind_mismatch():
    def register_models(register):
        register(PluginEntry(name="c", kind="constraint", factory=lambda p: p, params=P))

    reg = Registry(strict=False)
    reg.add_plugin(_plugin("k", register_models=register_models), provider="pkg")
    assert len(reg) == 0 and "through the model hook" in reg.failures[0].error


def test_cli_plugins_json_and_kind_filter():
    out = run_cli("plugins", "--json", "--kind", "constraint")
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)
    assert {i["name"] for i in items} == {
        "internal_noise",
        "bottleneck",
        "activation",
        "precision_limit",
        "flexible_layer",
        "neural_similarity",
        "neural_cotraining",
        "vone_block",
    }
    for item in items:
        assert {"name", "kind", "provider", "version", "error"} <= set(item) and item[
            "error"
        ] is None
    assert run_cli("plugins", "--kind", "nope").returncode == 2


def test_cli_schema_prints_json_schema():
    out = run_cli("schema", "constraint", "internal_noise")
    schema = json.loads(out.stdout)
    assert (
        schema["properties"]["sigma"]["default"] == 0.6
        and "description" in schema["properties"]["sigma"]
    )
    sub = json.loads(run_cli("schema", "submission").stdout)
    assert "training" in sub["properties"] and "sweep" in sub["properties"]
    bad = run_cli("schema", "model", "small_alexnt")
    assert bad.returncode == 2 and "small_alexnet" in bad.stderr


def test_listing_plugins_does_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from bioprior.registry.cli.app import app\n"
        "r = CliRunner().invoke(app, ['plugins', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'timm', 'torchvision', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_preview_writes_png(tmp_path):
    out = tmp_path / "grid.png"
    done = run_cli(
        "preview", "memorization", "-p", "random=shuffled_pixels", "-o", str(out), "--count", "3"
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "2 conditions x 3 images" in done.stdout
    bad = run_cli("preview", "memorization", "-p", "random=nope", "-o", str(tmp_path / "x.png"))
    assert (
        bad.returncode == 2
        and "--params: random:" in bad.stderr
        and not (tmp_path / "x.png").exists()
    )
