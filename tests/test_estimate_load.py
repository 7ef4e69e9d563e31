"""On a CPU the plan estimates an evaluation run before from the CPU seconds it took (recorded in
its row's provenance), done now at the cores a step will get: the run's workers side by side
and the machine's present load (``CoreShare``), not from the wall time it took under the load of
its own day."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import pytest
from test_estimate_history import _estimates, _sub

import bioprior
from bioprior.registry.base.threads import CoreShare, usable_cores
from bioprior.registry.hooks.loading import get_registry
from bioprior.registry.planning.steps import EvaluateStep
from bioprior.registry.scoring.scorer import Scorer
from bioprior.registry.store.results import ResultStore
from bioprior.registry.submissions.loading import validate_submission_dict


def _estimate_with(home, sub: dict, share: CoreShare | None) -> dict[tuple[int, float], object]:
    loaded = validate_submission_dict(sub, get_registry())
    with ResultStore(home / "results.sqlite") as store:
        scorer = Scorer(store, get_registry(), device="cpu", max_batch=1)
        _, summary = scorer.plan([loaded])
        estimates = scorer.estimate(summary, share)
    return {
        (s.job.seed, s.job.training.constraints[0].params.sigma): estimates[s.key]
        for s in summary.steps
        if isinstance(s, EvaluateStep)
    }


def test_rows_record_cpu_seconds_and_estimates_scale_by_the_cores_a_step_gets(bioprior_home):
    rows = bioprior.score(_sub([0], [0.0, 0.5]), device="cpu", workers=1)
    cached = [r for r in rows if r["metrics"]["stimuli"]["generated"] == 0]
    cpu = cached[0]["provenance"]["cpu_seconds"]
    threads = cached[0]["provenance"]["torch_num_threads"]
    # CPU time of the step's own process: work done, at most its threads for its wall time
    assert 0 < cpu <= cached[0]["duration_s"] * threads * 1.2 + 0.2

    later = _sub([0], [0.0, 0.25, 0.5])  # a third model of seed 0 finds the stimuli cached
    alone = _estimate_with(bioprior_home, later, CoreShare(1, 1, 2, 0.0))[(0, 0.25)]
    crowded = _estimate_with(bioprior_home, later, CoreShare(1, 2, 2, 2.0))[(0, 0.25)]
    assert alone.seconds == pytest.approx(cpu, rel=1e-6)  # one core of its own
    assert crowded.seconds == pytest.approx(2 * cpu, rel=1e-6)  # 4 runnable threads, 2 cores
    assert "cores a step" in crowded.note
    # without a share (or for rows without CPU seconds) the wall time is the estimate
    (plain,) = [e for k, e in _estimates(bioprior_home, later).items() if k == (0, 0.25)]
    assert plain.seconds == pytest.approx(cached[0]["duration_s"])


def test_core_share_counts_every_runnable_thread():
    assert CoreShare(1, 2, 2, 0.0).per_step == 1.0  # two one-thread workers, two cores
    assert CoreShare(2, 1, 2, 1.0).per_step == pytest.approx(2 * 2 / 3)
    assert CoreShare(1, 4, 2, None).per_step == 0.5
    assert CoreShare(1, 1, 2, 0.0).slowdown == 1.0
    assert CoreShare(1, 4, 2, 0.0).slowdown == 2.0  # calibrated alone, then four on two cores


def _burn(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.slow
def test_the_estimate_holds_on_a_busy_machine(bioprior_home):
    """Seed 0's cached-stimuli evaluation run on a quiet machine estimates a later one while
    as many busy processes as cores run beside it within 25%."""
    cores = usable_cores()
    sub = _sub([0], [0.0, 0.5])
    sub["model"]["params"]["width"] = 1.0  # seconds of work, not milliseconds
    params = sub["benchmarks"][0]["params"]
    params.update(
        corruptions=["gaussian_noise", "contrast", "fog", "pixelate"], severities=[1, 3, 5]
    )
    quiet = [
        r["duration_s"]
        for r in bioprior.score(sub, device="cpu", workers=1, threads=1)
        if r["metrics"]["stimuli"]["generated"] == 0
    ]
    later = {**sub, "sweep": {"constraints.0.params.sigma": [0.0, 0.25, 0.5]}}
    burners = _burn(cores)
    try:
        time.sleep(2.0)  # the load is there when the plan looks
        share = CoreShare.now(1, 1, cores)
        estimate = _estimate_with(bioprior_home, later, share)[(0, 0.25)].seconds
        (row,) = [
            r
            for r in bioprior.score(later, device="cpu", workers=1, threads=1)
            if r["variant"].get("constraints.0.params.sigma") == 0.25
        ]
    finally:
        for p in burners:
            p.kill()
    assert row["duration_s"] > 1.3 * statistics.median(quiet)  # the load did slow it
    assert estimate == pytest.approx(row["duration_s"], rel=0.25)
