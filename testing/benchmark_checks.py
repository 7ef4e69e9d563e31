"""Benchmark checks (end to end on tiny digits with a tiny budget: metrics JSON-able, score in
its declared range, the same numbers twice) and attack checks (epsilon and [0, 1] bounds)."""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bioprior import plugin

from .constraint_checks import sequential_host
from .subject import CheckFailed, CheckSkipped, Subject

#: the submission a benchmark is run in: seconds on CPU
TINY_SUBMISSION: dict[str, Any] = {
    "model": {"name": "small_alexnet", "params": {"width": 0.1, "input_size": 16}},
    "constraints": [],
    "training": {"dataset": "digits", "epochs": 1, "batch_size": 128, "lr": 0.05},
    "seeds": [0],
}

_HOME: Path | None = None


def kit_home() -> Path:
    """A private BIOPRIOR_HOME for the kit's runs (removed at exit)."""
    global _HOME
    if _HOME is None:
        _HOME = Path(tempfile.mkdtemp(prefix="bioprior-checks-"))
        atexit.register(shutil.rmtree, _HOME, True)
    return _HOME


@contextmanager
def _home(path: Path):
    old = os.environ.get("BIOPRIOR_HOME")
    os.environ["BIOPRIOR_HOME"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BIOPRIOR_HOME", None)
        else:
            os.environ["BIOPRIOR_HOME"] = old


def submission_for(s: Subject) -> dict[str, Any]:
    raw = {**TINY_SUBMISSION, **dict(s.config.submission)}
    raw["name"] = f"conformance-{s.entry.name}"
    raw["benchmarks"] = [{"name": s.entry.name, "params": s.params}]
    return raw


def _run_once(s: Subject, home: Path):
    import torch

    from bioprior.registry.engine.service import TrainingService  # lazy: torch
    from bioprior.registry.planning.declare import (  # lazy: core internals (pydantic)
        Declared,
        build_benchmark,
        declared_trainings,
    )
    from bioprior.registry.planning.jobs import plan  # lazy: core internals (pydantic)
    from bioprior.registry.scoring.scorer import PreflightError, Scorer  # lazy: core internals
    from bioprior.registry.submissions.loading import (  # lazy: core internals (pydantic)
        InvalidSubmission,
        validate_submission_dict,
    )

    raw = submission_for(s)
    try:
        loaded = validate_submission_dict(raw, s.registry)
    except InvalidSubmission as exc:
        raise CheckFailed(
            f"the check submission is invalid ({'; '.join(map(str, exc.errors))}); pass "
            "params={...} / submission={...} to parametrize_with_checks"
        ) from None
    results = []
    with _home(home):
        service = TrainingService(home, torch.device("cpu"))
        jobs = plan([loaded])
        declared: Declared = {}
        benchmarks = {}
        for job in jobs:  # what the planner does: each benchmark declares its trainings
            benchmarks[job.key] = build_benchmark(job)  # built once per job, run as the runner does
            declared_trainings(job, s.registry, declared, benchmarks[job.key])
        try:
            Scorer.preflight(jobs, service, declared)
        except PreflightError as exc:
            raise CheckSkipped(f"data not available here: {exc.message}") from None
        for job in jobs:
            benchmark = benchmarks[job.key]
            ctx = plugin.BenchmarkContext(job, service, s.registry, declared[job.key])
            results.append(benchmark.run(ctx))
    return benchmark, results


def runs(s: Subject):
    """(benchmark, first results, second results), run once per subject."""
    if "runs" not in s.cache:
        home = kit_home() / s.entry.name
        try:  # two cold runs: fresh homes, nothing cached (weights, stimuli)
            benchmark, first = _run_once(s, home / "first")
            _, second = _run_once(s, home / "second")
        except (CheckFailed, CheckSkipped) as exc:
            s.cache["runs"] = exc
        except Exception as exc:  # noqa: BLE001
            s.cache["runs"] = CheckFailed(
                f"running {s.entry.name} on {submission_for(s)['training']['dataset']} raised "
                f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            )
        else:
            s.cache["runs"] = (benchmark, first, second)
    if isinstance(s.cache["runs"], Exception):
        raise s.cache["runs"]
    return s.cache["runs"]


def runs_end_to_end(s: Subject) -> None:
    """Runs on tiny digits with a tiny budget and returns a BenchmarkResult."""
    _, first, _ = runs(s)
    for result in first:
        if not isinstance(result, plugin.BenchmarkResult):
            raise CheckFailed(f"run() returned {type(result).__name__}, not BenchmarkResult")
        if not result.metrics:
            raise CheckFailed("run() returned no metrics")


def metrics_jsonable(s: Subject) -> None:
    """Metrics are plain JSON (str keys, finite numbers, lists, dicts)."""
    _, first, _ = runs(s)
    for result in first:
        try:
            json.dumps(result.metrics, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CheckFailed(
                f"metrics are not plain JSON ({exc}): convert tensors / numpy values with "
                "float() or .tolist(), and report a missing number as None, not NaN"
            ) from None


def score_in_range(s: Subject) -> None:
    """The summary score is a finite number in the benchmark's ``score_range`` ([0, 1])."""
    benchmark, first, _ = runs(s)
    low, high = getattr(benchmark, "score_range", (0.0, 1.0))
    for result in first:
        score = result.score
        if score is None:
            raise CheckFailed(
                "score is None: return a summary score (or None only on purpose, "
                "listed as an expected failure)"
            )
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            raise CheckFailed(f"score {score!r} is not a finite number")
        if not low <= score <= high:
            raise CheckFailed(
                f"score {score} outside [{low}, {high}]: rescale it, or declare "
                "score_range = (low, high) on the Benchmark class"
            )


def same_numbers_twice(s: Subject) -> None:
    """The same job run twice from scratch gives the same metrics and score."""
    _, first, second = runs(s)
    for a, b in zip(first, second, strict=True):
        ma = json.loads(json.dumps(a.metrics, default=str))
        mb = json.loads(json.dumps(b.metrics, default=str))
        differ = sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))
        if differ or a.score != b.score:
            raise CheckFailed(
                f"two runs of the same job differ in {', '.join(differ) or 'score'}: seed every "
                "random draw from the context's seed and make cached stimuli identical to fresh"
            )


def declares_its_work(s: Subject) -> None:
    """``work(needs)`` is None or a ``Work`` of finite, non-negative passes (the plan's estimate
    of a run never timed); one that says it generates stimuli previews them (the plan times
    ``preview`` on a few test images)."""
    from bioprior.registry.engine.estimate import check_work  # lazy: core internals (torch)
    from bioprior.registry.planning.declare import build_benchmark  # lazy: core internals
    from bioprior.registry.planning.jobs import plan  # lazy: core internals (pydantic)
    from bioprior.registry.submissions.loading import (  # lazy: core internals (pydantic)
        validate_submission_dict,
    )

    job = plan([validate_submission_dict(submission_for(s), s.registry)])[0]
    benchmark = build_benchmark(job)
    work = benchmark.work(plugin.Needs(job, s.registry))
    if work is None:
        return
    try:
        check_work(work)  # what the plan checks before it counts
    except ValueError as exc:
        raise CheckFailed(f"work(): {exc}; return a Work of passes >= 0, or None") from None
    if work.stimuli:
        import torch  # lazy: torch

        try:
            shown = benchmark.preview(torch.rand(2, 1, 8, 8, generator=torch.Generator()), 0)
        except NotImplementedError:
            raise CheckFailed(
                "work() says the run generates stimuli (Work.stimuli) but the benchmark has no "
                "preview(images, seed) of them: the plan times the preview"
            ) from None
        if not shown:
            raise CheckFailed("preview() returned no stimuli")


CHECKS = [
    ("runs_end_to_end", runs_end_to_end),
    ("metrics_jsonable", metrics_jsonable),
    ("score_in_range", score_in_range),
    ("same_numbers_twice", same_numbers_twice),
    ("declares_its_work", declares_its_work),
]


# -- attacks ----------------------------------------------------------------------------------
EPSILONS = {"linf": 0.03, "l2": 0.5, "l1": 2.0, "l0": 4.0}


def _norms(delta, norm: str):
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(dim=1)
    if norm == "l1":
        return flat.abs().sum(1)
    return (flat.abs() > 1e-6).sum(1).float()


def respects_epsilon_and_bounds(s: Subject) -> None:
    """Adversarial images stay in [0, 1] and within epsilon in the attack's norm."""
    import foolbox as fb
    import torch

    built = s.entry.build(s.params)
    norm, attack = getattr(built, "norm", None), getattr(built, "attack", None)
    if norm not in EPSILONS or attack is None:
        raise CheckFailed(
            "the factory must return an object with .attack (a foolbox attack), .norm (linf | "
            "l2 | l1 | l0) and .minimal (see bioprior's attack plugins)"
        )
    digits = s.registry.get("dataset", "digits").build({})
    x = plugin.fit_images(digits.test_x[:8], 1, 16)
    y = digits.test_y[:8]
    torch.manual_seed(0)
    model = sequential_host().eval()
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    eps = EPSILONS[norm]
    torch.manual_seed(0)
    raw, clipped, _ = attack(fmodel, x, y, epsilons=[eps])
    for label, advs in (("raw", raw[0]), ("clipped", clipped[0])):
        if advs.shape != x.shape:
            raise CheckFailed(
                f"{label} adversarials have shape {tuple(advs.shape)}, not {tuple(x.shape)}"
            )
        if float(advs.min()) < -1e-6 or float(advs.max()) > 1 + 1e-6:
            raise CheckFailed(
                f"{label} adversarials leave [0, 1] ({float(advs.min()):.3g}..{float(advs.max()):.3g}):"
                " clip to the model's bounds"
            )
    checked = clipped[0] if getattr(built, "minimal", False) else raw[0]
    worst = float(_norms(checked - x, norm).max())
    if worst > eps * (1 + 1e-3) + 1e-5:
        raise CheckFailed(
            f"perturbation {worst:.4g} exceeds epsilon {eps} in {norm}: project onto the "
            f"{norm} ball (or declare the right norm)"
        )


ATTACK_CHECKS = [("respects_epsilon_and_bounds", respects_epsilon_and_bounds)]
