"""The plan's wall time with CPU workers side by side: the scheduler itself run on the steps'
estimates (a virtual clock), not their sum."""

from __future__ import annotations

import re
from dataclasses import dataclass

from conftest import run_cli, tiny_submission
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bioprior.registry.execution.scheduling import wall_time


@dataclass(frozen=True)
class Step:
    key: str
    seconds: float
    depends_on: tuple[str, ...] = ()
    after_trainings: bool = False


def _plan(trainings: list[float], evaluations: list[float], waiting=False) -> list[Step]:
    """One training per seed, then one evaluation per training (the planner's shape);
    ``waiting``: the evaluations wait for the trainings still to start."""
    train = [Step(f"t{i}", s) for i, s in enumerate(trainings)]
    evaluate = [Step(f"e{i}", s, (f"t{i}",), waiting) for i, s in enumerate(evaluations)]
    return [*train, *evaluate]


def test_a_finished_training_is_evaluated_before_the_next_training_starts():
    steps = _plan([10, 20, 30], [1, 2, 3])
    # by hand: t0 and t1 start at 0; t0 ends at 10, e0 runs 10-11 (ready first), then t2 11-41
    # on that worker; t1 ends at 20, e1 runs 20-22; e2 waits for t2: 41-44
    assert wall_time(steps, lambda s: s.seconds, 2) == 44
    assert wall_time(steps, lambda s: s.seconds, 1) == sum(s.seconds for s in steps)
    # evaluations after the trainings: t2 starts at 10 (t0's end), e0 at 20 on the worker
    # t1 frees, e1 at 21, e2 at 40: 43
    assert wall_time(_plan([10, 20, 30], [1, 2, 3], True), lambda s: s.seconds, 2) == 43


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.floats(1, 1000), min_size=1, max_size=12).flatmap(
        lambda t: st.tuples(
            st.just(t), st.lists(st.floats(0, 100), min_size=len(t), max_size=len(t))
        )
    ),
    st.integers(1, 4),
    st.booleans(),
)
def test_the_wall_time_lies_between_the_bounds_any_schedule_has(plan, workers, waiting):
    trainings, evaluations = plan
    steps = _plan(trainings, evaluations, waiting)
    total = sum(s.seconds for s in steps)
    longest_chain = max(t + e for t, e in zip(trainings, evaluations, strict=True))
    wall = wall_time(steps, lambda s: s.seconds, workers)
    assert wall >= max(total / workers, longest_chain) - 1e-6
    # a list schedule that never idles a worker while a step is ready (Graham 1966/69)
    assert wall <= total / workers + longest_chain * (1 - 1 / workers) + 1e-6


def _seconds(text: str) -> float:
    """human_seconds back to seconds ("~1.2 min", "40 s", "1.1 h")."""
    value, unit = re.fullmatch(r"~?([\d.]+) (s|min|h)", text.strip()).groups()
    return float(value) * {"s": 1, "min": 60, "h": 3600}[unit]


def test_the_dry_run_and_the_run_give_the_wall_time_with_their_workers(tmp_path, write_submission):
    sub = tiny_submission("walled", seeds=[0, 1, 2, 3])
    path, env = write_submission(sub), {"BIOPRIOR_HOME": str(tmp_path)}
    plan = run_cli("score", str(path), "--dry-run", "--threads", "2", "--workers", "2", env=env)
    assert plan.returncode == 0, plan.stderr
    found = re.search(
        r"estimate: (~[\d.]+ \w+), .* in total; (~[\d.]+ \w+) of wall time with 2 workers",
        plan.stdout,
    )
    assert found, plan.stdout
    total, wall = map(_seconds, found.groups())
    assert total / 2 * 0.9 <= wall <= total * 1.05  # two workers: about half the sum

    done = run_cli("score", str(path), "--threads", "2", "--workers", "2", env=env)
    assert done.returncode == 0, done.stderr
    said = re.search(
        r"estimate: ~[\d.]+ \w+ of wall time with 2 workers side by side, to about \w{3} "
        r"\d\d:\d\d",
        done.stdout,
    )  # before anything runs: when the run should end
    assert said and said.start() < done.stdout.index("training "), done.stdout
    assert re.search(
        r"wall time with 2 workers side by side: ~[\d.]+ \w+ estimated, [\d.]+ \w+ actual",
        done.stdout,
    ), done.stdout
