"""The plan's evaluation estimates come from earlier runs of the same evaluation (benchmark and
parameters, model, dataset): the first job of a seed pays for generating its stimuli, the
others of that seed find them cached; an evaluation never run before gets the one-pass floor."""

from __future__ import annotations

import statistics

import pytest
from conftest import tiny_submission

import bioprior
from bioprior.registry.hooks.loading import get_registry
from bioprior.registry.planning.steps import EvaluateStep
from bioprior.registry.scoring.scorer import Scorer
from bioprior.registry.store.results import ResultStore
from bioprior.registry.submissions.loading import validate_submission_dict

CORRUPTION = {
    "name": "corruption",
    "params": {
        "corruptions": ["gaussian_noise", "contrast"],
        "severities": [1, 3],
        "noise_sweeps": ["uniform_noise"],
        "geirhos_levels": [0.1, 0.3],
        "max_images": 96,
        "workers": 0,
    },
}


def _sub(seeds: list[int], sigmas: list[float]) -> dict:
    return tiny_submission(
        "timed",
        benchmarks=[CORRUPTION],
        seeds=seeds,
        sweep={"constraints.0.params.sigma": sigmas},
    )


def _estimates(home, sub: dict) -> dict[tuple[int, float], object]:
    registry = get_registry()
    loaded = validate_submission_dict(sub, registry)
    with ResultStore(home / "results.sqlite") as store:
        scorer = Scorer(store, registry, device="cpu", max_batch=1)
        _, summary = scorer.plan([loaded])
        estimates = scorer.estimate(summary)
    out = {}
    for step in summary.steps:
        if isinstance(step, EvaluateStep):
            sigma = step.job.training.constraints[0].params.sigma
            out[(step.job.seed, sigma)] = estimates[step.key]
    return out


def test_evaluations_are_estimated_from_earlier_runs(bioprior_home):
    before = _estimates(bioprior_home, _sub([0], [0.0, 0.5]))
    assert len(before) == 2 and all("not run before" in e.note for e in before.values())

    rows = bioprior.score(_sub([0], [0.0, 0.5]), device="cpu", workers=1)  # one after the other
    assert [r["status"] for r in rows] == ["ok", "ok"]
    fresh = [r["duration_s"] for r in rows if r["metrics"]["stimuli"]["generated"] > 0]
    cached = [r["duration_s"] for r in rows if r["metrics"]["stimuli"]["generated"] == 0]
    assert len(fresh) == 1 and len(cached) == 1  # the second model of seed 0 reused them

    # seed 1 (new stimuli) for both models, and a third model on seed 0 (stimuli cached)
    after = _estimates(bioprior_home, _sub([0, 1], [0.0, 0.25, 0.5]))
    assert set(after) == {(0, 0.25), (1, 0.0), (1, 0.25), (1, 0.5)}  # the rest is done
    assert after[(0, 0.25)].seconds == pytest.approx(statistics.median(cached))
    seed1 = sorted(after[(1, s)].seconds for s in (0.0, 0.25, 0.5))
    # one of seed 1's jobs generates its stimuli, the other two find them cached
    assert seed1 == pytest.approx(sorted([*cached, *cached, *fresh]))
    assert all("as measured" in after[k].note for k in after)


def test_a_different_benchmark_setting_is_not_timed_by_another(bioprior_home):
    bioprior.score(_sub([0], [0.0]), device="cpu")
    other = _sub([0], [0.0])
    other["benchmarks"] = [{**CORRUPTION, "params": {**CORRUPTION["params"], "max_images": 64}}]
    (estimate,) = _estimates(bioprior_home, other).values()
    assert "not run before" in estimate.note
    # its training is cached, so nothing in the plan trains it: the floor comes from timing
    # that training's step, not from nothing
    assert estimate.seconds > 0


def test_runs_of_the_same_constraints_time_a_job_before_others(bioprior_home):
    """A job is timed by earlier runs of its own constraints where there are some (a Flexible
    Layer that blends its max-pooling branch in evaluates about twice as long as one that only
    convolves, on the same model, data and benchmark), by the others' median where not."""
    import sqlite3

    sub = tiny_submission("constrained", sweep={"constraints.0.params.sigma": [0.0, 0.5]})
    rows = bioprior.score(sub, device="cpu", workers=1)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    with sqlite3.connect(bioprior_home / "results.sqlite") as conn:  # one slow, one fast
        for sigma, seconds in ((0.0, 2.0), (0.5, 40.0)):
            conn.execute(
                "UPDATE results SET duration_s = ? "
                "WHERE json_extract(variant, '$.\"constraints.0.params.sigma\"') = ?",
                (seconds, sigma),
            )
    later = {**sub, "seeds": [1], "sweep": {"constraints.0.params.sigma": [0.0, 0.25, 0.5]}}
    estimates = _estimates(bioprior_home, later)
    assert estimates[(1, 0.0)].seconds == pytest.approx(2.0)
    assert estimates[(1, 0.5)].seconds == pytest.approx(40.0)
    assert "of these constraints" in estimates[(1, 0.5)].note
    assert estimates[(1, 0.25)].seconds == pytest.approx(21.0)  # never run: the others' median
    assert "of other constraints" in estimates[(1, 0.25)].note
