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
    seed1 = sorted((after[(1, s)] for s in (0.0, 0.25, 0.5)), key=lambda e: e.seconds)
    # one of seed 1's jobs generates its stimuli: the cached runs' evaluation plus the
    # generation counted for this run; the other two find them cached
    assert [e.seconds for e in seed1[:2]] == pytest.approx([*cached, *cached])
    assert seed1[2].seconds > cached[0]
    assert "its evaluation as measured" in seed1[2].note
    assert "its stimuli generated first" in seed1[2].note
    assert all("as measured" in after[k].note for k in after)


def test_a_run_that_generated_does_not_time_the_next_generation(bioprior_home):
    """A run that generated its stimuli in a process pool records only its own process's CPU
    seconds (evanson Table 2's corruption on Fashion-MNIST: 75 CPU s for a 20-minute run): the
    next seed's first job is timed by the runs that found their stimuli cached, plus its
    generation counted for this run, never by those CPU seconds."""
    import json
    import sqlite3

    from bioprior.registry.base.threads import CoreShare

    rows = bioprior.score(_sub([0], [0.0, 0.5]), device="cpu", workers=1)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    with sqlite3.connect(bioprior_home / "results.sqlite") as conn:
        for rowid, metrics, provenance in conn.execute(
            "SELECT id, metrics, provenance FROM results"
        ).fetchall():
            generated = json.loads(metrics)["stimuli"]["generated"] > 0
            prov = json.loads(provenance)
            prov["cpu_seconds"] = 0.5 if generated else 2.0  # the pool's work not counted
            seconds = 600.0 if generated else 3.0
            conn.execute(
                "UPDATE results SET provenance = ?, duration_s = ? WHERE id = ?",
                (json.dumps(prov), seconds, rowid),
            )
    registry = get_registry()
    loaded = validate_submission_dict(_sub([1], [0.0]), registry)
    with ResultStore(bioprior_home / "results.sqlite") as store:
        scorer = Scorer(store, registry, device="cpu", max_batch=1)
        _, summary = scorer.plan([loaded])
        share = CoreShare(threads=1, workers=1, cores=2, load=0.0)
        estimates = scorer.estimate(summary, share)
    step = next(s for s in summary.steps if isinstance(s, EvaluateStep))
    estimate = estimates[step.key]
    # the cached run's CPU seconds at one core a step, plus a generation counted > 0
    assert estimate.seconds > 2.0 and estimate.seconds < 600.0
    assert "its stimuli generated first" in estimate.note

    # where only runs that generated exist, their wall time counts, not their CPU seconds
    from bioprior.registry.engine.estimate import MeasuredTimes
    from bioprior.registry.store.results import MeasuredEvaluation

    pooled = MeasuredEvaluation(
        step.job.cost_signature, step.job.stimuli_signature, 0, 600.0, True, "cpu", 0.5, 1
    )
    alone = MeasuredTimes([pooled], share).estimate(step, 0.0)
    assert alone.seconds == pytest.approx(600.0) and not alone.without_generation


def test_stimuli_left_by_a_stopped_run_are_not_counted_again(bioprior_home):
    """A run stopped while it generated a seed's corrupted sets left some in the cache: the plan
    counts the generation of the rest only, and none where all are there."""
    from dataclasses import replace

    from bioprior.benchmarks.corruption.run import stimulus_set
    from bioprior.registry.planning.declare import build_benchmark

    registry = get_registry()
    loaded = validate_submission_dict(_sub([3], [0.0]), registry)
    with ResultStore(bioprior_home / "results.sqlite") as store:
        scorer = Scorer(store, registry, device="cpu", max_batch=1)
        _, summary = scorer.plan([loaded])
        step = next(s for s in summary.steps if isinstance(s, EvaluateStep))

        def estimate():
            return scorer.estimate(summary)[step.key]

        none = estimate()
        assert none.generation > 0 and "its stimuli generated first" in none.note
        sets = stimulus_set(
            build_benchmark(step.job).params, scorer.service().data(step.job.training), 3
        )
        half = len(sets.conditions) // 2
        replace(sets, conditions=sets.conditions[:half]).ensure()  # what the stopped run made
        some = estimate()
        share = half / len(sets.conditions)
        assert some.generation == pytest.approx(none.generation * (1 - share))
        assert f"{share:.0%} of them cached" in some.note
        sets.ensure()
        assert estimate().generation == 0.0
        assert "its stimuli cached by an earlier run" in estimate().note
        assert none.seconds - none.generation == pytest.approx(estimate().seconds)


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


def test_workers_side_by_side_split_a_seeds_generation():
    """With serial generation in CPU workers, the evaluations of a seed that become ready
    together start side by side and split the seed's stimuli (a lock per set): the first
    ``workers`` of them each carry a share of the generation, the total unchanged."""
    from types import SimpleNamespace

    from bioprior.registry.engine.estimate import Estimate, share_generation

    def step(key: str, seed: int, depends_on: tuple[str, ...] = ()) -> EvaluateStep:
        identity = {"training": {"dataset": {"name": "fashion_mnist"}}}
        job = SimpleNamespace(key=key, seed=seed, identity=lambda: identity)
        return EvaluateStep(job, depends_on)  # type: ignore[arg-type]

    steps = [step("a", 0), step("b", 0), step("c", 0), step("d", 1, ("t1",)), step("e", 1, ("t1",))]
    estimates = {
        "a": Estimate(100.0, 0.0, "a", generation=80.0),
        "b": Estimate(30.0, 0.0, "b"),
        "c": Estimate(20.0, 0.0, "c"),
        "d": Estimate(60.0, 0.0, "d", generation=50.0),
        "e": Estimate(10.0, 0.0, "e"),
    }
    share_generation(steps, estimates, workers=2)
    seconds = {k: e.seconds for k, e in estimates.items()}
    assert seconds == pytest.approx({"a": 60.0, "b": 70.0, "c": 20.0, "d": 35.0, "e": 35.0})
    assert "split between 2 workers" in estimates["b"].note
    alone = {"x": Estimate(100.0, 0.0, "x", generation=80.0)}
    share_generation([step("x", 0)], alone, workers=2)  # nothing beside it to split with
    assert alone["x"].seconds == 100.0
