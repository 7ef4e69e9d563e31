"""Shared fixtures: an isolated BIOPRIOR_HOME per test and small submissions on digits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bioprior.registry.hooks.loading import get_registry, set_registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def bioprior_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("BIOPRIOR_HOME", str(home))
    monkeypatch.delenv("BIOPRIOR_DATA", raising=False)
    monkeypatch.delenv("BIOPRIOR_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("BIOPRIOR_PREFER", raising=False)
    yield home
    set_registry(None)


@pytest.fixture
def one_thread():
    """One torch thread for a module of many tiny ops (faster on a small, shared CPU); restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def registry():
    return get_registry(reload=True)


def tiny_submission(name: str = "tiny", **overrides) -> dict:
    """A submission that trains in about a second on digits."""
    sub = {
        "name": name,
        "model": {"name": "small_alexnet", "params": {"width": 0.1, "input_size": 8}},
        "constraints": [{"name": "internal_noise", "params": {"sigma": 0.0}}],
        "training": {"dataset": "digits", "epochs": 2, "batch_size": 128, "lr": 0.05},
        "seeds": [0],
        "benchmarks": [{"name": "memorization"}],
    }
    sub.update(overrides)
    return sub


@pytest.fixture
def write_submission(tmp_path):
    def write(sub: dict, filename: str | None = None) -> Path:
        path = tmp_path / (filename or f"{sub['name']}.yaml")
        path.write_text(yaml.safe_dump(sub, sort_keys=False))
        return path

    return write


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the installed `bioprior` command in a subprocess (as a user would)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bioprior.registry.cli.app", *args],
        check=False,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )


# -- performance pairs (tests/perf/) --------------------------------------------------------------
# pytest-benchmark pairs: a reference and the engine in the same run, the GPU synchronized inside
# the timed call. Every test under tests/perf/ is marked ``perf`` and skipped by the default run;
# run them with ``python -m pytest tests/perf -m perf --benchmark-enable --benchmark-autosave`` and
# read the ratios with ``python -m bioprior.perf``. (The hooks live here, not in a
# tests/perf/conftest.py, which would shadow this module for ``from conftest import ...``.)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/perf/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.perf)


@pytest.fixture
def record(benchmark):
    """A recorder of ``extra_info`` (pair, role, images/s, device) for a perf pair."""
    from perfkit import recorder

    return recorder(benchmark)


def dead_pid() -> int:
    """The pid of a process that has exited (a scorer or worker killed without cleaning up)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)
