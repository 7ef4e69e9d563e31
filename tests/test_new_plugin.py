"""`bioprior new-plugin` renders a package that installs, passes its own conformance tests,
is checked by `bioprior plugins check` and scores a submission; a broken one is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import run_cli

KINDS = ("constraint", "model", "dataset", "benchmark")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One package per kind rendered by the CLI and pip-installed into a private folder
    (no network: no deps, no build isolation); PYTHONPATH makes their entry points visible."""
    out = tmp_path_factory.mktemp("packages")
    roots = {}
    for kind in KINDS:
        done = run_cli("new-plugin", f"my-{kind}", "--kind", kind, "-o", str(out))
        assert done.returncode == 0, done.stderr
        roots[kind] = out / f"bioprior-my-{kind}"
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--target", str(target), *map(str, roots.values())],
        check=True,
        capture_output=True,
        cwd=tmp_path_factory.mktemp("build"),
    )
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}
    return roots, env


def test_rendered_package_layout(rendered):
    roots, _ = rendered
    root = roots["constraint"]
    pyproject = (root / "pyproject.toml").read_text()
    assert 'my_constraint = "bioprior_my_constraint.plugin"' in pyproject
    assert "[project.entry-points.bioprior]" in pyproject
    for path in [
        "src/bioprior_my_constraint/plugin.py",
        "src/bioprior_my_constraint/layers.py",
        "tests/test_conformance.py",
        "README.md",
        "example.yaml",
        ".github/workflows/test.yml",
    ]:
        assert (root / path).is_file(), path
    assert "pytest" in (root / ".github/workflows/test.yml").read_text()
    again = run_cli("new-plugin", "my-constraint", "-o", str(root.parent))
    assert again.returncode == 2 and "not empty" in again.stderr
    assert run_cli("new-plugin", "My Plugin").returncode == 2
    assert run_cli("new-plugin", "x", "--kind", "nope").returncode == 2


def test_rendered_packages_pass_their_own_tests(rendered, tmp_path):
    """The authors' view: `pytest` in each package runs the kit (one item per entry x check)
    and the speed tests through the pytest11 plugin's benchmark fixtures."""
    roots, env = rendered
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib"]
        + ["-o", "addopts=", "--benchmark-disable", "-rs"]
        + [str(roots[k] / "tests") for k in KINDS],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "OMP_NUM_THREADS": "1", "BIOPRIOR_HOME": str(tmp_path)},
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and "error" not in summary, summary
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 4 * 8, summary  # common checks + the kind's, per package, plus speed tests


def test_plugins_check_and_score_a_submission(rendered, bioprior_home):
    roots, env = rendered
    check = run_cli("plugins", "check", "bioprior-my-constraint", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    for name in ("applies_to_timm", "at_inference_switch", "imports_without_torch"):
        assert name in check.stdout
    assert "failed" not in check.stdout and " ok" in check.stdout
    out = run_cli("score", str(roots["constraint"] / "example.yaml"), "--device", "cpu", env=env)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(run_cli("results", "--format", "json", env=env).stdout)
    assert row["status"] == "ok" and row["metrics"]["natural_test_acc"] > 0.3
    assert row["plugin_versions"]["constraint:my_constraint"] == "1 (bioprior-my-constraint 0.1.0)"


BROKEN = """
from pydantic import Field
from bioprior import hookimpl
from bioprior.registry.hooks.entries import PluginParams
import torch  # listing now imports torch


class Params(PluginParams):
    depth: int = Field(default=3, description="Layers.")


@hookimpl
def register_models(register):
    register(name="leaky_net", factory=lambda p: torch.nn.Linear(2, 2), params=Params)
"""


def test_plugins_check_reports_failures_with_exit_1(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "leaky_plugin.py").write_text(textwrap.dedent(BROKEN))
    info = site / "bioprior_leaky-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bioprior-leaky\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bioprior]\nleaky = leaky_plugin\n")
    env = {"PYTHONPATH": str(site)}
    done = run_cli("plugins", "check", "bioprior-leaky", "--name", "leaky_*", "--json", env=env)
    assert done.returncode == 1
    by_check = {r["check"]: r for r in json.loads(done.stdout)}
    assert "importing leaky_plugin imports torch" in by_check["imports_without_torch"]["message"]
    assert "citation=" in by_check["version_and_citation"]["message"]
    assert by_check["output_shape"]["status"] == "failed"
    missing = run_cli("plugins", "check", "no-such-dist", env=env)
    assert missing.returncode == 2 and "no-such-dist" in missing.stderr
    listing = run_cli("plugins", "leaky_*", env=env)  # a pattern still lists
    assert listing.returncode == 0 and "leaky_net" in listing.stdout
