"""With several workers the plan starts each seed's longest trainings first, and lets the
evaluations wait for the trainings still to start, where that shortens the estimated wall time:
a long training planned last runs alone while the other workers idle."""

from __future__ import annotations

from types import SimpleNamespace

from conftest import run_cli, tiny_submission

from bioprior.registry.execution.scheduling import _SimulatedBackend, schedule
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


class _Recording(_SimulatedBackend):
    """The scheduler's virtual clock, noting when each step starts."""

    def __init__(self, seconds, capacity: int):
        super().__init__(seconds, capacity)
        self.starts: dict[str, float] = {}

    def start(self, step, limits) -> None:
        self.starts[step.label] = self.clock
        super().start(step, limits)


def _starts(planned: Planned) -> dict[str, float]:
    """When each step starts (h) as the scheduler runs the plan on its estimates."""
    backend = _Recording(lambda s: planned.estimates[s.key].seconds, planned.sharing.workers)
    for _ in schedule(planned.summary.steps, backend):
        pass
    return {label: round(t / 3600, 6) for label, t in backend.starts.items()}


def test_fig_4a_evaluations_wait_for_the_trainings_where_that_saves_time():
    planned = _planned(FIG_4A, workers=2)
    assert planned.start_longest_first() is not None  # 55.6 -> 47.3 h, above
    baseline = planned.summary.train_steps[2].label  # after the flexible and convolutional
    ready_first = _starts(planned)
    assert ready_first[baseline] == 23.2 + 2.5  # after the convolutional one's evaluation
    walls = planned.evaluate_after_trainings()
    # by hand: 31.5 on one worker, 23.2 then 19.1 on the other (42.3); the first worker
    # evaluates the convolutional (31.5-34, first in plan order) and the flexible (34-36.5)
    # networks, then waits for the baseline (42.3-44.8): 44.8 h instead of 47.3
    assert walls is not None
    assert round(walls[0] / 3600, 6) == 47.3 and round(walls[1] / 3600, 6) == 44.8
    assert round(planned.wall_seconds() / 3600, 6) == 44.8  # the run's estimate is the new one
    starts = _starts(planned)
    assert starts[baseline] == 23.2  # as soon as the convolutional training ends
    evaluations = {s.job.training.key: starts[s.label] for s in planned.summary.steps[3:]}
    assert [evaluations[s.key] for s in planned.summary.train_steps] == [34.0, 31.5, 42.3]
    assert all(isinstance(s, EvaluateStep) for s in planned.summary.steps[3:])


def test_the_ready_first_rule_stays_where_waiting_would_not_save_time():
    """Table 2's shape (four trainings of 14-19 min a seed, evaluations of 1-2 min): results
    as the sweep goes; one worker: waiting never shortens a run."""
    table2 = _planned({1: 0.23, 2: 0.25, 3: 0.31}, workers=2, seeds=range(10), eval_h=0.03)
    order = list(table2.summary.steps)
    assert table2.evaluate_after_trainings() is None and table2.summary.steps == order
    assert not any(getattr(s, "after_trainings", False) for s in table2.summary.steps)
    one_worker = _planned(FIG_4A, workers=1)
    assert one_worker.evaluate_after_trainings() is None
    seconds = {h: v / 3600 for h, v in FIG_4A.items()}  # Fig. 4A's shape in seconds
    short = _planned(seconds, workers=2, eval_h=2.5 / 3600)
    short.start_longest_first()
    assert short.evaluate_after_trainings() is None  # 2.5 s saved: not worth the wait
