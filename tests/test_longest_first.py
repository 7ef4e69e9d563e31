"""With several workers the plan starts each seed's longest trainings first where that shortens
the estimated wall time: a long training planned last runs alone while the other workers idle."""

from __future__ import annotations

from types import SimpleNamespace

from conftest import run_cli, tiny_submission

from bioprior.registry.hooks.loading import get_registry
from bioprior.registry.planning.jobs import plan
from bioprior.registry.planning.steps import EvaluateStep, TrainStep, summarize
from bioprior.registry.scoring.session import Planned
from bioprior.registry.scoring.workers import WorkerPlan
from bioprior.registry.submissions.loading import validate_submission_dict

#: a benchmark that declares only the job's own training
ONE_TRAINING = [{"name": "adversarial", "params": {"transfer": False}}]


def _planned(hours: dict[int, float], workers: int, seeds=(0,), eval_h: float = 2.5) -> Planned:
    """Three variants (epochs 1, 2, 3) per seed, each training taking ``hours[epochs]``, each
    evaluation ``eval_h``."""
    registry = get_registry()
    sub = tiny_submission(
        "lpt", seeds=list(seeds), sweep={"training.epochs": [1, 2, 3]}, benchmarks=ONE_TRAINING
    )
    jobs = plan([validate_submission_dict(sub, registry)])
    summary = summarize(jobs, set(), registry)
    estimates = {}
    for step in summary.steps:
        hours_of = hours[step.epochs] if isinstance(step, TrainStep) else eval_h
        estimates[step.key] = SimpleNamespace(seconds=hours_of * 3600.0)
    return Planned(jobs, summary, WorkerPlan(workers, 1, ""), estimates)


def _train_hours(planned: Planned, hours: dict[int, float]) -> list[tuple[int, float]]:
    return [
        (min(m.seed for m in s.members), hours[s.epochs])
        for s in planned.summary.steps
        if isinstance(s, TrainStep)
    ]


FIG_4A = {1: 19.1, 2: 23.2, 3: 31.5}  # baseline, convolutional, flexible HMAX (h, planned)


def test_fig_4a_on_two_workers_starts_the_longest_training_first():
    planned = _planned(FIG_4A, workers=2)
    walls = planned.start_longest_first()
    # by hand, in plan order: 19.1 and 23.2 start; the first is evaluated (2.5) and then 31.5
    # runs alone: 19.1 + 2.5 + 31.5 + 2.5 = 55.6 h. Longest first: 31.5 + 2.5 on one worker,
    # 23.2 + 2.5 + 19.1 + 2.5 = 47.3 h on the other
    assert walls is not None
    assert round(walls[0] / 3600, 6) == 55.6 and round(walls[1] / 3600, 6) == 47.3
    assert _train_hours(planned, FIG_4A) == [(0, 31.5), (0, 23.2), (0, 19.1)]
    assert round(planned.wall_seconds() / 3600, 6) == 47.3  # the run's estimate is the new one
    kinds = [s.kind for s in planned.summary.steps]
    assert kinds == ["train"] * 3 + ["evaluate"] * 3  # evaluations after, as planned


def test_seeds_stay_in_order():
    """A stop still leaves whole seeds: seed 1's longest training waits for seed 0's."""
    planned = _planned(FIG_4A, workers=2, seeds=(0, 1))
    seconds = {key: e.seconds for key, e in planned.estimates.items()}
    planned.summary.steps = planned.summary.longest_first(seconds)
    assert _train_hours(planned, FIG_4A) == [
        (0, 31.5), (0, 23.2), (0, 19.1), (1, 31.5), (1, 23.2), (1, 19.1)
    ]  # fmt: skip
    evaluations = [s.job.seed for s in planned.summary.steps if isinstance(s, EvaluateStep)]
    assert evaluations == [0, 0, 0, 1, 1, 1]


def test_the_plan_order_stays_where_it_would_not_save_time():
    same = {1: 1.0, 2: 1.02, 3: 0.99}  # one length, give or take a calibration's noise
    planned = _planned(same, workers=2)
    order = list(planned.summary.steps)
    assert planned.start_longest_first() is None and planned.summary.steps == order
    one_worker = _planned(FIG_4A, workers=1)
    order = list(one_worker.summary.steps)
    assert one_worker.start_longest_first() is None and one_worker.summary.steps == order
    no_estimates = _planned(FIG_4A, workers=2)
    no_estimates.estimates = {}
    assert no_estimates.start_longest_first() is None


def test_the_dry_run_says_it_and_lists_the_longest_training_first(tmp_path, write_submission):
    """Real calibrations: trainings of 1, 2 and 60 epochs on digits, two workers."""
    sub = tiny_submission("lengths", sweep={"training.epochs": [1, 2, 60]}, benchmarks=ONE_TRAINING)
    out = run_cli(
        "score",
        str(write_submission(sub)),
        "--dry-run",
        "--workers",
        "2",
        "--threads",
        "2",
        env={"BIOPRIOR_HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    log = out.stdout + out.stderr
    assert "order: the longest trainings of each seed start first" in log, log
    lines = [line.strip() for line in out.stdout.splitlines()]
    longest = next(line for line in lines if line.startswith("evaluate lengths[epochs=60]"))
    first_training = next(line for line in lines if line.startswith("train "))
    assert f"[{longest.split(' after ')[1]}]" in first_training, out.stdout
