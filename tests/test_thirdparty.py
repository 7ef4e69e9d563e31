"""A third-party plugin package is found through its entry point and scores a submission."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli

PACKAGE = ROOT / "plugins" / "example_thirdparty"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the example package into a private folder (no network: no deps, no isolation)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(PACKAGE),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path_factory.mktemp("build"),
    )
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    }


def test_entry_point_is_found_with_provider(installed):
    out = run_cli("plugins", "--json", env=installed)
    items = {(i["kind"], i["name"]): i for i in json.loads(out.stdout)}
    assert items[("model", "lenet5")]["provider"] == "bioprior-example-plugin"
    assert items[("constraint", "synaptic_failure")]["provider_version"] == "0.1.0"
    assert not [i for i in items.values() if i["error"]]
    assert ("model", "lenet5") not in {
        (i["kind"], i["name"]) for i in json.loads(run_cli("plugins", "--json").stdout)
    }


def test_scores_a_submission_using_it(installed, bioprior_home):
    out = run_cli("score", str(PACKAGE / "example.yaml"), "--device", "cpu", env=installed)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(run_cli("results", "--format", "json", env=installed).stdout)
    assert row["status"] == "ok" and row["metrics"]["natural_test_acc"] > 0.5
    assert (
        row["plugin_versions"]["constraint:synaptic_failure"] == "1 (bioprior-example-plugin 0.1.0)"
    )
