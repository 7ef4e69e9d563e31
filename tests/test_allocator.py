"""Freed memory stays in the process while it trains (registry.allocator): a training step's
buffers are reused, not faulted in again page by page (6 million faults on the quickstart)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the allocator limits are glibc's",
)

STEPS = """
import json, resource, sys
import torch
if sys.argv[1] == "service":
    from pathlib import Path
    from bioprior.registry.engine.service import TrainingService
    TrainingService(Path(sys.argv[2]), torch.device("cpu"))
from bioprior.registry.base.allocator import keep_freed_memory
torch.set_num_threads(1)
x = torch.randn(32, 48, 16, 16)
w = torch.randn(64, 48, 5, 5, requires_grad=True)

def step():
    torch.nn.functional.conv2d(x, w, padding=2).relu().sum().backward()

for _ in range(5):  # the heap grows to its working size
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(60):  # glibc's defaults fault about 1,000 pages a step; kept, a few hundred once
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "kept": keep_freed_memory()}))
"""


def _steps(mode: str, tmp_path, **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.pop("BIOPRIOR_MALLOC", None)
    out = subprocess.run(
        [sys.executable, "-c", STEPS, mode, str(tmp_path)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_training_service_keeps_freed_pages_for_the_next_step(tmp_path):
    plain = _steps("plain", tmp_path, BIOPRIOR_MALLOC="system")
    kept = _steps("service", tmp_path)
    assert plain["faults"] > 2000  # glibc hands the 3 MB activations back every step
    assert kept["kept"] is True
    assert kept["faults"] < plain["faults"] / 20


@pytest.mark.parametrize(
    "setting", [("MALLOC_TRIM_THRESHOLD_", "131072"), ("BIOPRIOR_MALLOC", "system")]
)
def test_the_users_own_allocator_settings_are_left_alone(monkeypatch, setting):
    from bioprior.registry.base import allocator

    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv(*setting)
    assert allocator.keep_freed_memory() is False


RELEASE = """
import json, sys
import torch
from bioprior.registry.base.allocator import keep_freed_memory, release_freed_memory

def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

keep_freed_memory()
start = resident_mb()
blocks = [torch.ones(256, 1024) for _ in range(600)]  # 600 MB in 1 MB blocks, like activations
del blocks
kept = resident_mb()
released = release_freed_memory()
print(json.dumps({"start": start, "kept": kept, "after": resident_mb(), "released": released}))
"""


def test_freed_memory_goes_back_when_the_scorer_is_done_calibrating():
    """What a process keeps freed for its next step (Fig. 4A's calibration: about 1.1 GB) goes
    back to the system with ``release_freed_memory``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.pop("BIOPRIOR_MALLOC", None)
    out = subprocess.run(
        [sys.executable, "-c", RELEASE],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    mb = json.loads(out.stdout.strip().splitlines()[-1])
    assert mb["kept"] - mb["start"] > 400  # kept for reuse
    assert mb["released"] is True
    assert mb["after"] - mb["start"] < 100
