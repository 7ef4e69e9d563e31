"""The README is what a newcomer copies: its plugin example must be a working plugin, written
against the public module only, and its set-up commands must be the ones CI runs."""

from __future__ import annotations

import re
import warnings

from conftest import ROOT

README = (ROOT / "README.md").read_text()

#: the module the example imports ``Failure`` from (``from .layers import Failure``)
LAYERS = '''
import torch
from torch import nn


class Failure(nn.Module):
    """Each activation fails (is zeroed) with probability p, while training (or always)."""

    def __init__(self, p: float, at_inference: bool = False):
        super().__init__()
        self.p, self.at_inference = p, at_inference

    def forward(self, x):
        if not (self.training or self.at_inference):
            return x
        return x * (torch.rand_like(x) >= self.p)
'''


def _section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_readme_is_short_and_starts_with_the_two_set_up_commands():
    assert len(README.encode()) < 12 * 1024
    setup = _section("Set-up")
    commands = re.findall(r"```bash\n(.*?)```", setup, re.DOTALL)[0].strip().splitlines()
    assert commands == [
        'pip install torch==2.13.0 torchvision==0.28.0 -e ".[dev]"',
        "bioprior score submissions/quickstart.yaml",
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[0] in ci and "python -m pytest" in ci and "python -m pytest" in setup


def test_the_plugin_example_is_a_working_plugin(tmp_path, monkeypatch, one_thread):
    from bioprior.registry.hooks.loading import Registry, get_registry
    from bioprior.testing import checks_for, run_checks

    (code,) = re.findall(r"```python\n(.*?)```", _section("Writing a plugin"), re.DOTALL)
    assert "bioprior.registry" not in code and "from bioprior.plugin import" in code
    package = tmp_path / "readme_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(code)
    (package / "layers.py").write_text(LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the kit imports it in a fresh interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from readme_plugin import plugin

        registry = Registry(strict=True, prefer={})
        registry.add_plugin(plugin, provider="readme-plugin", provider_version="0.1")
        hosts = get_registry().list("model", "small_alexnet")  # the checks' host model
        for entry in hosts + get_registry().list("constraint", "internal_noise"):
            registry._entries[(entry.kind, entry.name)] = entry
        results = run_checks(checks_for(distribution="readme-plugin", registry=registry))
    assert registry.get("constraint", "synaptic_failure").citation
    not_ok = [r for r in results if r.status != "ok" and r.check != "objective_adds_finite_loss"]
    assert len(results) > 5 and not_ok == [], not_ok
