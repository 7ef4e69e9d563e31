"""The plan: training steps (each benchmark's declared trainings, deduped by content key, batched
where they can be) and evaluation steps that depend on them.

Pure bookkeeping (no torch): what to run, what is already done or cached, in which order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from bioprior.registry.base.hashing import content_hash
from bioprior.registry.hooks.loading import Registry
from bioprior.registry.planning.declare import Declared, declared_trainings, training_keys
from bioprior.registry.planning.jobs import Job
from bioprior.registry.planning.spec import TrainingSpec


# -- steps (what executors run: docs/architecture.md) ---------------------------------------------
@dataclass(frozen=True)
class TrainStep:
    """One training, or K trainings batched into one model (``members``)."""

    members: tuple[TrainingSpec, ...]
    note: str = ""  # why it trains alone, when it could not be batched
    kind: str = "train"
    depends_on: tuple[str, ...] = ()
    #: the submissions whose jobs need it (their ``limits:`` apply to it; not part of the key)
    submissions: tuple[str, ...] = field(default=(), compare=False)

    @cached_property
    def key(self) -> str:
        if len(self.members) == 1:
            return self.members[0].key
        return "batch-" + content_hash(sorted(m.key for m in self.members))

    @property
    def epochs(self) -> int:
        return self.members[0].recipe.epochs

    @property
    def label(self) -> str:
        first = self.members[0]
        if len(self.members) == 1:
            return first.label
        return f"{len(self.members)} x {first.model.entry.name} batched ({first.epochs_label})"


@dataclass(frozen=True)
class EvaluateStep:
    """One job, run once the trainings it declared are ready."""

    job: Job
    depends_on: tuple[str, ...] = ()
    kind: str = "evaluate"
    #: the trainings the job's benchmark declared (None: not declared here, e.g. a step rebuilt
    #: from its payload, whose runner declares them)
    trainings: tuple[TrainingSpec, ...] | None = field(default=None, compare=False)
    #: start in plan order, after the trainings still to start, rather than as soon as its
    #: trainings are ready (the plan's choice where that shortens the run; not part of the key)
    after_trainings: bool = field(default=False, compare=False)

    @property
    def key(self) -> str:
        return self.job.key

    @property
    def declared(self) -> tuple[TrainingSpec, ...]:
        """The trainings it declared (before they are declared: the job's own)."""
        return (self.job.training,) if self.trainings is None else self.trainings

    @property
    def training_keys(self) -> frozenset[str]:
        return training_keys(self.declared)

    @property
    def submission(self) -> str:
        """Rows (and claims) are per submission: two may share a job's content key."""
        return self.job.submission

    @property
    def label(self) -> str:
        return self.job.label


Step = TrainStep | EvaluateStep


def step_training_keys(step: Any) -> frozenset[str]:
    """The trainings an evaluation step may ask for (their weights go where it runs): a planned
    evaluation's declared ones, a bare job's own, a custom step's ``training_keys`` (of it or
    of its ``job``); none for a training step."""
    if isinstance(step, EvaluateStep):
        return step.training_keys
    target = getattr(step, "job", step)
    if isinstance(target, Job):
        return training_keys((target.training,))
    return frozenset(getattr(target, "training_keys", ()))


@dataclass
class PlanSummary:
    total: int
    done: int
    todo: list[Job] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    cached: list[TrainingSpec] = field(default_factory=list)  # declared, weights already saved

    @property
    def declared(self) -> Declared:
        """Job key -> the trainings its benchmark declared, for every job to run (as its
        evaluation step carries them)."""
        return {
            s.key: s.trainings
            for s in self.steps
            if isinstance(s, EvaluateStep) and s.trainings is not None
        }

    @property
    def trainings(self) -> int:
        return sum(len(s.members) for s in self.train_steps)

    @property
    def train_steps(self) -> list[TrainStep]:
        return [s for s in self.steps if isinstance(s, TrainStep)]

    @property
    def epochs(self) -> int:
        return sum(len(s.members) * s.epochs for s in self.train_steps)

    def longest_first(self, seconds: Mapping[str, float]) -> list[Step]:
        """The steps with each seed's trainings in order of their estimated ``seconds`` (by
        step key; what is left of a resumed one), longest first; seeds stay in order, and the
        evaluations follow as planned. With several workers, a long training started last keeps
        one worker busy while the others have nothing left to do (longest processing time
        first, Graham 1969); a training without an estimate keeps its place after those with
        one."""
        trains = [s for s in self.steps if isinstance(s, TrainStep)]
        rest = [s for s in self.steps if not isinstance(s, TrainStep)]
        trains.sort(key=lambda s: (min(m.seed for m in s.members), -seconds.get(s.key, 0.0)))
        return [*trains, *rest]

    def evaluations_after_trainings(self) -> list[Step]:
        """The steps with every evaluation marked to wait for the trainings still to start (the
        plan lists the trainings first): a finished training's evaluation then goes to the
        first worker with no training left to start, not to the one that trained it."""
        return [
            replace(s, after_trainings=True) if isinstance(s, EvaluateStep) else s
            for s in self.steps
        ]

    def describe(self) -> str:
        batched = sum(1 for s in self.train_steps if len(s.members) > 1)
        return (
            f"{self.total} jobs: {self.done} already done, {len(self.todo)} to run; "
            f"{self.trainings} trainings to run in {len(self.train_steps)} steps "
            f"({batched} batched), {len(self.cached)} cached; {self.epochs} epochs"
        )


def summarize(
    jobs: list[Job],
    done: set[tuple[str, str]],
    registry: Registry,
    is_cached: Callable[[TrainingSpec], bool] = lambda spec: False,
    batch_limit: Callable[[TrainingSpec, int], int] = lambda spec, size: 1,
    declared: Declared | None = None,
) -> PlanSummary:
    """The steps for the jobs not done: every declared training not cached, deduped by key and
    grouped (``TrainingSpec.batch_group``) into batches of at most ``batch_limit(first member,
    group size)``, in seed order (every variant's first seed first, so that a sweep stopped
    early has every variant on its first seeds), then the evaluations in seed order too (a stop
    leaves whole seeds, and a seed's evaluations, which share its generated stimuli, run side by
    side), each depending on the steps that train what it declared. ``declared``: the caller's
    cache of declared trainings (filled here; pass the same dict to plan the same jobs again
    without declaring them twice)."""
    cache: Declared = {} if declared is None else declared
    todo = [j for j in jobs if (j.submission, j.key) not in done]
    trainings = {j.key: declared_trainings(j, registry, cache) for j in todo}
    needed: dict[str, TrainingSpec] = {}
    users: dict[str, dict[str, None]] = {}  # training key -> the submissions that need it
    for job in todo:
        for spec in trainings[job.key]:
            needed.setdefault(spec.key, spec)
            users.setdefault(spec.key, {})[job.submission] = None

    def train_step(members: tuple[TrainingSpec, ...], note: str = "") -> TrainStep:
        subs = dict.fromkeys(n for m in members for n in users.get(m.key, ()))
        return TrainStep(members, note=note, submissions=tuple(subs))

    cached = [s for s in needed.values() if is_cached(s)]
    groups: dict[Any, list[TrainingSpec]] = {}
    for spec in needed.values():
        if not is_cached(spec):
            groups.setdefault(spec.batch_group or ("alone", spec.key), []).append(spec)
    steps: list[Step] = []
    for group, members in groups.items():
        if isinstance(group, tuple):  # not batchable
            steps.append(train_step((members[0],), note=members[0].why_alone))
            continue
        k = max(1, batch_limit(members[0], len(members))) if len(members) > 1 else 1
        if k == 1 and len(members) > 1:
            note = "alone: batch limit 1 (batching does not pay on this device, or --batch 1)"
            steps.extend(train_step((m,), note=note) for m in members)
            continue
        for i in range(0, len(members), k):
            steps.append(train_step(tuple(members[i : i + k])))
    steps.sort(key=lambda s: min(m.seed for m in s.members))  # stable: plan order within a seed
    step_of = {m.key: s.key for s in steps if isinstance(s, TrainStep) for m in s.members}
    for job in sorted(todo, key=lambda j: j.seed):  # stable: plan order within a seed
        specs = trainings[job.key]
        deps = dict.fromkeys(step_of[s.key] for s in specs if s.key in step_of)
        steps.append(EvaluateStep(job, tuple(deps), trainings=specs))
    return PlanSummary(len(jobs), len(jobs) - len(todo), todo, steps, cached)
