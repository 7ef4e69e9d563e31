"""Pair "sweep": a quickstart-style sweep (6 noise levels x natural / random data = 12 trainings,
small_alexnet at reduced width on digits) scored end to end by the Scorer, batched (up to 12
members) against one training at a time; a fresh home per round. The batched side's rounds each
follow one run of the other (``interleave``), so both share the same minutes of a drifting machine."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from perfkit import DEVICE, interleave, sync

from bioprior.registry.hooks.loading import get_registry
from bioprior.registry.scoring.scorer import Scorer
from bioprior.registry.store.results import ResultStore
from bioprior.registry.submissions.loading import validate_submission_dict

pytestmark = pytest.mark.perf
SWEEP = {
    "name": "perf-sweep",
    "model": {"name": "small_alexnet", "params": {"width": 0.1, "input_size": 16}},
    "constraints": [{"name": "internal_noise", "params": {"sigma": 0.0}}],
    "training": {"dataset": "digits", "epochs": 2, "batch_size": 64, "lr": 0.01},
    "sweep": {"constraints.0.params.sigma": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]},
    "seeds": [0],
    "benchmarks": ["memorization"],
}


def _score(max_batch: int) -> int:
    registry = get_registry()
    home = Path(tempfile.mkdtemp(prefix="bioprior-perf-"))
    with ResultStore(home / "results.sqlite") as store:
        scorer = Scorer(store, registry, device=str(DEVICE), home=home, max_batch=max_batch)
        _, summary = scorer.plan([validate_submission_dict(SWEEP, registry)])
        report = scorer.run(summary)
    sync()
    assert all(o.status == "ok" for o in report.outcomes)
    return summary.trainings


@pytest.mark.parametrize("max_batch", [12, 1], ids=["batched", "one-at-a-time"])
@pytest.mark.benchmark(group="sweep-end-to-end")
def test_sweep(benchmark, record, max_batch):
    if max_batch > 1:
        trainings = interleave(benchmark, lambda: _score(max_batch), lambda: _score(1), rounds=2)
    else:
        trainings = benchmark.pedantic(_score, args=(max_batch,), rounds=2, iterations=1)
    assert trainings == 12
    role = "engine" if max_batch > 1 else "reference"
    record("sweep-12-trainings", role, 12 * 1797)


@pytest.mark.skipif(DEVICE.type != "cpu", reason="CPU workers: a GPU runs one step at a time")
@pytest.mark.parametrize("workers", ["2", "1"], ids=["two-workers", "in-turn"])
@pytest.mark.benchmark(group="sweep-cpu-workers")
def test_sweep_cpu_workers(benchmark, record, tmp_path_factory, workers):
    """Pair "sweep-cpu-workers": the sweep (10 epochs) scored by ``bioprior score`` with two threads,
    as two one-thread CPU workers side by side (``--workers 2``) against its trainings in turn
    (``--workers 1``); a fresh home per round, the command's start-up included."""
    import os
    import subprocess
    import sys

    import yaml

    path = tmp_path_factory.mktemp("sweep") / "sweep.yaml"
    sweep = {**SWEEP, "training": {**SWEEP["training"], "epochs": 10}}  # the trainings dominate
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))

    def score_with(workers: str) -> None:
        home = tempfile.mkdtemp(prefix="bioprior-perf-")
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bioprior.registry.cli.app",
                "score",
                str(path),
                "--device",
                "cpu",
            ]
            + ["--threads", "2", "--workers", workers, "--batch", "1"],
            env={**os.environ, "BIOPRIOR_HOME": home},
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr

    if workers == "1":
        benchmark.pedantic(score_with, args=(workers,), rounds=2, iterations=1)
    else:  # each round after one in-turn run: fresh processes, so no warm-up round
        interleave(
            benchmark, lambda: score_with(workers), lambda: score_with("1"), rounds=2, warmup=0
        )
    record("sweep-cpu-workers", "engine" if workers != "1" else "reference", 12 * 1797)
