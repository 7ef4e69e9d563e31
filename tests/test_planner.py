"""The plan: declared trainings deduped by content key, batched into training steps, evaluation
steps that depend on them; job keys unchanged; torch-free; undeclared trainings are errors."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, run_cli, tiny_submission

from bioprior.registry.hooks.loading import get_registry
from bioprior.registry.planning import declare
from bioprior.registry.planning.declare import build_benchmark, declared_trainings
from bioprior.registry.planning.jobs import plan
from bioprior.registry.planning.steps import EvaluateStep, summarize
from bioprior.registry.submissions.loading import load_submission, validate_submission_dict

#: the quickstart's job and training keys before trainings were planned (must never change)
QUICKSTART = {
    "quickstart[sigma=0.0] seed=0 memorization": ("13ce91aaab440630e86a", "3c3108f11f728baf9c22"),
    "quickstart[sigma=0.6] seed=0 memorization": ("2549bde8f246e9c7adfa", "ec620288ace4567df44c"),
}


def _summary(sub: dict, batch: int = 8):
    registry = get_registry()
    jobs = plan([validate_submission_dict(sub, registry)])
    return jobs, summarize(jobs, set(), registry, batch_limit=lambda spec, size: batch)


def test_quickstart_keys_unchanged():
    jobs = plan([load_submission(ROOT / "submissions" / "quickstart.yaml", get_registry())])
    assert {j.label: (j.key, j.training.key) for j in jobs} == QUICKSTART


def test_jobs_are_plain_data_and_the_caller_owns_the_declared_trainings(monkeypatch):
    registry = get_registry()
    jobs = plan([load_submission(ROOT / "submissions" / "quickstart.yaml", registry)])
    first, second = jobs
    built = []
    monkeypatch.setattr(
        declare, "build_benchmark", lambda job: built.append(job) or build_benchmark(job)
    )
    cache: declare.Declared = {}
    specs = declared_trainings(first, registry, cache)
    assert cache == {first.key: specs} and first.training in specs and built == [first]
    assert declared_trainings(first, registry, cache) is specs and built == [first]  # cached
    summary = summarize(jobs, set(), registry, declared=cache)
    assert built == [first, second]  # only the job not declared yet was built
    assert summary.declared == {j.key: cache[j.key] for j in jobs}
    evaluations = [s for s in summary.steps if isinstance(s, EvaluateStep)]
    assert [e.trainings for e in evaluations] == [cache[first.key], cache[second.key]]
    assert evaluations[0].training_keys == {s.key for s in specs}
    # the job itself holds nothing built or declared: its fields and its cached key
    fields = {"submission", "variant", "seed", "training", "benchmark", "key"}
    assert set(vars(first)) == fields and not hasattr(first, "declare")


def test_planner_is_torch_free():
    code = (
        "import sys\n"
        "from bioprior.registry.planning.jobs import plan\n"
        "from bioprior.registry.planning.steps import summarize\n"
        "from bioprior.registry.hooks.loading import get_registry\n"
        "from bioprior.registry.submissions.loading import load_submission\n"
        "r = get_registry()\n"
        "jobs = plan([load_submission('submissions/quickstart.yaml', r)])\n"
        "s = summarize(jobs, set(), r, batch_limit=lambda spec, size: 4)\n"
        "assert len(s.train_steps) == 1 and len(s.train_steps[0].members) == 4, s.describe()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_declared_trainings_are_deduped_and_evaluations_depend_on_them():
    sub = tiny_submission(
        benchmarks=[
            {"name": "memorization"},
            {"name": "memorization", "params": {"random": "random_labels"}},
        ],
        seeds=[0, 1],
    )
    jobs, summary = _summary(sub, batch=1)
    assert len(jobs) == 4
    # per seed: the natural model (shared by both jobs) + 2 random derivatives
    assert summary.trainings == 6 and len(summary.train_steps) == 6
    train_keys = {s.key for s in summary.train_steps}
    evaluations = [s for s in summary.steps if isinstance(s, EvaluateStep)]
    assert len(evaluations) == 4
    order = [s.key for s in summary.steps]
    for ev in evaluations:
        assert len(ev.depends_on) == 2 and set(ev.depends_on) <= train_keys
        assert all(order.index(d) < order.index(ev.key) for d in ev.depends_on)


def test_evaluations_run_seed_by_seed():
    """A sweep's evaluations run a seed at a time (every variant and benchmark of seed 0, then
    of seed 1), plan order within a seed: a stop leaves whole seeds, and the evaluations of a
    seed, which share its generated stimuli, start side by side."""
    sub = tiny_submission(
        sweep={"constraints.0.params.sigma": [0.0, 0.6]},
        seeds=[3, 1],
        benchmarks=[
            {"name": "memorization"},
            {"name": "memorization", "params": {"random": "random_labels"}},
        ],
    )
    jobs, summary = _summary(sub)
    evaluations = [s for s in summary.steps if isinstance(s, EvaluateStep)]
    assert [e.job.seed for e in evaluations] == [1, 1, 1, 1, 3, 3, 3, 3]
    planned = [j.key for j in jobs]
    for seed in (1, 3):
        keys = [e.job.key for e in evaluations if e.job.seed == seed]
        assert keys == [k for k in planned if k in keys]  # the plan's order within the seed


def test_sweep_batches_into_groups_of_the_limit():
    sub = tiny_submission(sweep={"constraints.0.params.sigma": [0.0, 0.3, 0.6]}, seeds=[0, 1])
    _, summary = _summary(sub, batch=5)  # 3 sigmas x 2 seeds x (natural, random) = 12
    assert sorted(len(s.members) for s in summary.train_steps) == [2, 5, 5]
    assert summary.trainings == 12
    _, alone = _summary(sub, batch=1)
    assert len(alone.train_steps) == 12


def test_unbatchable_constraint_trains_alone_and_the_plan_says_so():
    sub = tiny_submission(
        constraints=[{"name": "vone_block"}],
        model={"name": "small_alexnet", "params": {"width": 0.1, "input_size": 8}},
        seeds=[0, 1],
    )
    _, summary = _summary(sub, batch=8)
    assert len(summary.train_steps) == 4
    assert all("not batchable: vone_block" in s.note for s in summary.train_steps)


def test_bottleneck_widths_batch_only_when_equal():
    sub = tiny_submission(
        constraints=[{"name": "bottleneck", "params": {"width": 2}}],
        sweep={"constraints.0.params.width": [2, 4]},
    )
    _, summary = _summary(sub, batch=8)
    assert sorted(len(s.members) for s in summary.train_steps) == [2, 2]


def test_dry_run_shows_steps_escaped_and_creates_nothing(bioprior_home, write_submission):
    path = write_submission(tiny_submission(sweep={"constraints.0.params.sigma": [0.0, 0.5]}))
    out = run_cli("score", str(path), "--dry-run", "--device", "cpu", "--batch", "4")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # the plan goes to stdout (captured by | tee)
    assert "tiny[sigma=0.0] seed=0 memorization" in text  # rich markup escaped
    assert "tiny[sigma=0.5] seed=0 memorization" in text
    assert "train 4 x small_alexnet batched" in text and "estimate: ~" in text
    assert "FLOP" in text
    assert not (bioprior_home / "results.sqlite").exists()
    assert not (bioprior_home / "weights").exists()


def test_undeclared_training_is_an_error_naming_the_benchmark(bioprior_home):
    from bioprior.registry.contracts.benchmark import Benchmark, BenchmarkResult
    from bioprior.registry.hooks.entries import PluginEntry, PluginParams
    from bioprior.registry.scoring.scorer import Scorer
    from bioprior.registry.store.results import ResultStore

    class Sneaky(Benchmark):  # declares only its own model, then asks for a random one
        def run(self, ctx):
            ctx.trained(ctx.derive("random_labels"))
            return BenchmarkResult({}, 0.0)

    entry = PluginEntry(name="sneaky", kind="benchmark", factory=Sneaky, params=PluginParams)
    registry = get_registry().extended(entry)
    loaded = validate_submission_dict(tiny_submission(benchmarks=["sneaky"]), registry)
    with ResultStore(bioprior_home / "r.sqlite") as store:
        scorer = Scorer(store, registry, device="cpu", max_batch=1)
        _, summary = scorer.plan([loaded])
        report = scorer.run(summary)
    (outcome,) = report.outcomes
    assert outcome.status == "failed" and outcome.error_class == "plugin_error"
    assert outcome.error.startswith("UndeclaredTraining")
    assert "benchmark 'sneaky'" in outcome.error and "random_labels" in outcome.error


def test_local_executor_fails_dependents_without_running_them():
    from dataclasses import dataclass

    from bioprior.registry.execution.local import LocalExecutor

    @dataclass(frozen=True)
    class FakeStep:
        key: str
        kind: str = "train"
        label: str = ""
        depends_on: tuple[str, ...] = ()

    ran: list[str] = []

    def worker(step):
        ran.append(step.key)
        if step.key == "t1":
            raise RuntimeError("out of memory")
        from bioprior.registry.planning.outcomes import _outcome

        return _outcome(step, status="ok")

    steps = [FakeStep("t1"), FakeStep("t2"), FakeStep("e1", "evaluate", "", ("t1", "t2"))]
    outcomes = list(LocalExecutor().run(steps, worker))
    assert ran == ["t1", "t2"]
    assert [o.status for o in outcomes] == ["failed", "ok", "failed"]
    assert (
        outcomes[2].error.startswith("dependency failed") and "out of memory" in outcomes[2].error
    )
    assert outcomes[2].error_class == outcomes[0].error_class  # the row says why


def test_cpu_batches_launch_bound_members_only_and_the_same_way_every_run(bioprior_home):
    """The automatic K is a rule of the specs and the device, not a timing: the quickstart's
    compute-bound AlexNet trains one at a time on a CPU, a sweep of a small Inception (many
    small layers) batches, and planning again gives the same steps."""
    from bioprior.registry.engine.estimate import _limits
    from bioprior.registry.scoring.scorer import Scorer
    from bioprior.registry.store.results import ResultStore

    registry = get_registry()
    quickstart = load_submission(ROOT / "submissions" / "quickstart.yaml", registry)
    inception = validate_submission_dict(
        tiny_submission(
            "inc",
            model={"name": "small_inception", "params": {"width": 0.1, "input_size": 8}},
            training={"dataset": "digits", "epochs": 1, "batch_size": 64, "lr": 0.05},
            sweep={"constraints.0.params.sigma": [0.0, 0.3, 0.6]},
        ),
        registry,
    )
    plans = []
    with ResultStore(bioprior_home / "r.sqlite") as store:
        for _ in range(2):
            _limits.clear()
            _, summary = Scorer(store, registry, device="cpu").plan([quickstart, inception])
            steps = summary.train_steps
            plans.append(sorted((s.members[0].model.entry.name, len(s.members)) for s in steps))
    assert plans[0] == plans[1]
    assert plans[0].count(("small_alexnet", 1)) == 4  # digits and random data, sigma 0 and 0.6
    assert ("small_inception", 6) in plans[0]  # three sigmas x (digits, random), one model


def test_trainings_of_one_cost_are_calibrated_once(bioprior_home, monkeypatch):
    """Natural and random data of one shape cost the same: the estimate calibrates each cost
    (model, constraints, recipe, image shape) once and gives both the same seconds; a noise
    level that changes the work (sigma 0 skips the noise) is calibrated on its own."""
    from bioprior.registry.engine import estimate, trainer
    from bioprior.registry.scoring.scorer import Scorer
    from bioprior.registry.store.results import ResultStore

    calls = []
    train = trainer.train_model
    monkeypatch.setattr(trainer, "train_model", lambda *a, **k: calls.append(1) or train(*a, **k))
    monkeypatch.setattr(estimate, "_calibrated", {})
    registry = get_registry()
    sub = validate_submission_dict(
        tiny_submission(sweep={"constraints.0.params.sigma": [0.0, 0.5]}), registry
    )
    with ResultStore(bioprior_home / "r.sqlite") as store:
        scorer = Scorer(store, registry, device="cpu", max_batch=1)
        _, summary = scorer.plan([sub])
        estimates = scorer.estimate(summary)
    trains = summary.train_steps
    assert len(trains) == 4  # natural and random data for each sigma
    # a warm-up and one or two timed trainings (the second fills a second) per cost: sigma 0, 0.5
    assert 2 * 2 <= len(calls) <= 2 * 3
    by_sigma: dict[float, set[float]] = {}
    for step in trains:
        sigma = step.members[0].constraints[0].params.sigma
        by_sigma.setdefault(sigma, set()).add(estimates[step.key].seconds)
    assert all(len(s) == 1 for s in by_sigma.values()) and len(by_sigma) == 2
