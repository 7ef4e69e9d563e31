"""A third-party plugin package written by tests: models that misbehave on purpose and a benchmark
that logs every evaluation it runs (to count duplicated work across processes).

``install(folder)`` writes the module and its ``.dist-info`` (entry point group ``bioprior``) into
``folder``; with ``folder`` on ``sys.path`` / ``PYTHONPATH`` every process, including child
processes and Ray workers, registers it through the ordinary entry-point machinery.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

MODULE = '''
"""bioprior_faulty: models that crash, hang, hog memory or emit NaN; a counting benchmark."""
import os
import signal
import time
from typing import Literal

from pydantic import Field

from bioprior import hookimpl
from bioprior.registry.contracts.benchmark import Benchmark, BenchmarkResult
from bioprior.registry.hooks.entries import ImageModelParams, PluginParams


class FaultyParams(ImageModelParams):
    mode: Literal[
        "ok", "segfault", "hang", "hog", "nan", "wrong_shape", "wrong_rank", "raise"
    ] = Field(
        default="ok", description="How the model misbehaves."
    )


def build(params):
    import torch
    from torch import nn

    if params.mode == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if params.mode == "hang":
        pid_file = os.environ.get("BIOPRIOR_TEST_PID_FILE")
        if pid_file:
            with open(pid_file, "w") as fh:
                fh.write(str(os.getpid()))
        time.sleep(3600)
    if params.mode == "hog":
        hog = torch.ones(1 << 31, dtype=torch.float32)  # 8 GiB
        hog += 1
    if params.mode == "raise":
        raise RuntimeError("faulty_net refuses to be built")
    pixels = params.in_channels * params.input_size * params.input_size
    classes = params.num_classes + (1 if params.mode == "wrong_shape" else 0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(pixels, classes)

        def forward(self, x):
            out = self.fc(x.flatten(1))
            if params.mode == "nan" and not self.training:
                out = out * float("nan")
            if params.mode == "wrong_rank":  # (N, classes, 1): training itself would fail
                out = out[..., None]
            return out

    return Net()


class CountedParams(PluginParams):
    sleep_s: float = Field(default=0.0, ge=0, description="Seconds to wait before evaluating.")


class Counted(Benchmark):
    """Test accuracy of the job's model; appends the job key to $BIOPRIOR_TEST_COUNT_LOG."""

    def run(self, ctx):
        trained = ctx.trained()
        time.sleep(self.params.sleep_s)
        log = os.environ.get("BIOPRIOR_TEST_COUNT_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(f"{ctx.job.submission} {ctx.job.key} {os.getpid()}\\n")
        acc = ctx.accuracy(trained)
        return BenchmarkResult({"accuracy": acc}, acc)


@hookimpl
def register_models(register):
    register(name="faulty_net", factory=build, params=FaultyParams, version="1",
             description="A linear model that misbehaves on demand (tests).")


@hookimpl
def register_benchmarks(register):
    register(name="counted", factory=Counted, params=CountedParams, version="1",
             description="Test accuracy; logs each evaluation (tests).")
'''


def install(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bioprior_faulty.py").write_text(MODULE)
    info = folder / "bioprior_faulty-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bioprior-faulty\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bioprior]\nfaulty = bioprior_faulty\n")
    return folder


def activate(folder: Path, monkeypatch) -> None:
    """Put the package on this process's path and on every child's PYTHONPATH."""
    monkeypatch.syspath_prepend(str(folder))
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    importlib.invalidate_caches()
    sys.modules.pop("bioprior_faulty", None)


def faulty_submission(name: str, mode: str = "ok", seeds=(0,), **extra) -> dict:
    sub = {
        "name": name,
        "model": {"name": "faulty_net", "params": {"mode": mode, "input_size": 8}},
        "training": {"dataset": "digits", "epochs": 1, "batch_size": 256, "lr": 0.05},
        "seeds": list(seeds),
        "benchmarks": [{"name": "counted"}],
    }
    sub.update(extra)
    return sub
