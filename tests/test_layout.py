"""The package's shape: moving plugin or benchmark files changes no entry and no job key.

``golden/job_keys.json`` holds every submission's job keys and ``golden/entries.json`` every
registered entry, both recorded before the move into ``plugins/<family>/`` and
``benchmarks/<family>/``. A change that alters them must say why (results are keyed by content).
"""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

from bioprior.registry.planner import plan
from bioprior.registry.submission import load_submission

GOLDEN = ROOT / "tests" / "golden"
JOB_KEYS = json.loads((GOLDEN / "job_keys.json").read_text())


def test_every_entry_is_still_registered(registry):
    names = sorted(f"{e.kind}:{e.name}" for e in registry.list())
    assert names == json.loads((GOLDEN / "entries.json").read_text())
    assert registry.failures == []


@pytest.mark.parametrize("filename", sorted(JOB_KEYS))
def test_submission_job_keys_unchanged(registry, filename):
    jobs = plan([load_submission(ROOT / "submissions" / filename, registry)])
    assert sorted(j.key for j in jobs) == JOB_KEYS[filename]


def test_quickstart_job_keys_unchanged(registry):
    jobs = plan([load_submission(ROOT / "submissions" / "quickstart.yaml", registry)])
    assert sorted(j.key for j in jobs) == ["13ce91aaab440630e86a", "2549bde8f246e9c7adfa"]
