"""The scorer: load submissions, plan jobs, skip finished ones, run the rest through an
executor and write every outcome to the store as soon as it is ready."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bioprior.registry.base.hashing import content_hash
from bioprior.registry.base.paths import home as default_home
from bioprior.registry.base.progress import Reporter
from bioprior.registry.base.threads import CoreShare
from bioprior.registry.contracts.neural_data import NeuralDataRef, load_neural_data
from bioprior.registry.execution.local import Executor, LocalExecutor
from bioprior.registry.hooks.loading import Registry, get_registry
from bioprior.registry.planning.declare import Declared
from bioprior.registry.planning.jobs import Job, plan
from bioprior.registry.planning.outcomes import JobOutcome, Outcome
from bioprior.registry.planning.spec import root_dataset
from bioprior.registry.planning.steps import PlanSummary, Step, summarize
from bioprior.registry.store.results import ResultStore
from bioprior.registry.store.weights import cached_problem, set_aside, weights_file
from bioprior.registry.submissions.loading import LoadedSubmission, load_submission


class PreflightError(Exception):
    """Bad input found before running: which submission, which field, what is wrong."""

    def __init__(self, submission: str, field: str, message: str):
        self.submission, self.field, self.message = submission, field, message
        super().__init__(f"{submission}: {field}: {message}")


@dataclass
class ScoreReport:
    plan: PlanSummary
    outcomes: list[JobOutcome] = field(default_factory=list)  # evaluations (the store's rows)
    trainings: list[Outcome] = field(default_factory=list)  # training steps
    estimates: dict[str, float] = field(default_factory=dict)  # step key -> estimated seconds

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status != "ok"]


class Scorer:
    def __init__(
        self,
        store: ResultStore,
        registry: Registry | None = None,
        device: str = "auto",
        home: Path | None = None,
        executor: Executor | None = None,
        reporter: Reporter | None = None,
        max_batch: int | None = None,
    ):
        self.store = store
        self.registry = registry or get_registry()
        self.device_name = device
        self.home = Path(home) if home else default_home()
        self.executor = executor or LocalExecutor()
        self.reporter = reporter or Reporter()
        #: members per batched training; None: as many as fit in memory (registry.estimate)
        self.max_batch = max_batch
        self._service = None
        #: job key -> the trainings its benchmark declared (each job is declared once)
        self.declared: Declared = {}
        #: cached weights files found reusable (key, inode, mtime, size): not hashed again
        self._checked: set[tuple] = set()

    def load(self, paths: Iterable[str | Path]) -> list[LoadedSubmission]:
        return [load_submission(p, self.registry) for p in paths]

    def plan(self, submissions: Sequence[LoadedSubmission]) -> tuple[list[Job], PlanSummary]:
        jobs = plan(submissions)
        weights = self.home / "weights"
        summary = summarize(
            jobs,
            self.store.done(),
            self.registry,
            is_cached=lambda spec: self._reusable(weights_file(weights, spec.key), spec.key),
            batch_limit=self._batch_limit,
            declared=self.declared,
        )
        return jobs, summary

    def _reusable(self, path: Path, key: str) -> bool:
        """Whether the cached weights of ``key`` may be reused: a regular file that matches its
        own hash and the hash the store recorded for ``key``. One that does not is set aside
        (``.rejected``) with a one-line notice, and its training runs again."""
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return False
        except OSError:
            info = None
        seen = (key, info.st_ino, info.st_mtime_ns, info.st_size) if info else None
        if seen is not None and seen in self._checked:
            return True
        problem = cached_problem(path, key, self.store.recorded_weights(key))
        if problem is None:
            if seen is not None:
                self._checked.add(seen)
            return True
        try:
            where = f"moved to {set_aside(path).name}"
        except OSError as exc:
            where = f"could not be moved aside ({exc.strerror})"
        self.reporter.message(
            f"warning: ignoring unreadable cached weights {path}: {problem}; {where}, retraining"
        )
        return False

    def fresh(self, jobs: list[Job]) -> PlanSummary:
        """The plan of these jobs from scratch (nothing done, nothing cached): the shape of the
        work, the same before a run and when it resumes (the CPU workers are counted on it)."""
        return summarize(
            jobs, set(), self.registry, batch_limit=self._batch_limit, declared=self.declared
        )

    def _batch_limit(self, spec, size: int) -> int:
        if self.max_batch is not None:
            return self.max_batch
        from bioprior.registry.engine.estimate import auto_batch_limit  # lazy: torch

        try:
            return auto_batch_limit(spec, self.service(), size)
        except Exception:  # noqa: BLE001 - bad data is reported by the preflight, not here
            return 8

    def service(self):
        """The training service of this scorer's device (built on first use)."""
        if self._service is None:
            from bioprior.registry.engine.service import TrainingService  # lazy: torch
            from bioprior.registry.engine.trainer import select_device  # lazy: torch

            self._service = TrainingService(
                self.home, select_device(self.device_name), self.reporter
            )
        return self._service

    def estimate(self, summary: PlanSummary, share: CoreShare | None = None):
        """Seconds and FLOPs per step (:mod:`.estimate`: one measured forward, a short
        calibration of the training step on this device, earlier runs' measured evaluations);
        ``share``: the cores each step will get on a CPU."""
        from bioprior.registry.engine.estimate import estimate_steps  # lazy: torch

        measured = self.store.evaluation_times()
        return estimate_steps(summary.steps, self.service(), measured, share, self.registry)

    def run(self, summary: PlanSummary, estimates: dict | None = None) -> ScoreReport:
        from bioprior.registry.engine.runner import StepRunner  # lazy: torch

        report = ScoreReport(summary)
        if not summary.todo:
            return report
        service = self.service()
        self.preflight(summary.todo, service, summary.declared)
        if estimates is not None:
            report.estimates = {k: e.seconds for k, e in estimates.items()}
        worker = StepRunner(service, self.registry)
        self.reporter.jobs_started(len(summary.todo))
        try:
            for outcome in self.executor.run(summary.steps, self._announced(worker)):
                if outcome.kind == "train":
                    report.trainings.append(outcome)
                    if outcome.error:
                        self.reporter.message(f"    training failed: {outcome.error}")
                    continue
                self.store.write(outcome)
                report.outcomes.append(outcome)
                self.reporter.job_finished(outcome.job.label, outcome.status, outcome.score)
                if outcome.error:
                    self.reporter.message(f"    error: {outcome.error}")
        finally:
            self.reporter.close()
        return report

    @staticmethod
    def preflight(jobs: Sequence[Job], service, declared: Declared | None = None) -> None:
        """Load every source dataset once before any job runs: a missing dataset is bad input
        (raised as :class:`PreflightError`), not a string of failed jobs. ``declared``: the
        trainings each job's benchmark declared, by job key (a job not in it: its own)."""
        declared = {} if declared is None else declared
        from bioprior.registry.toolkit.data import DataUnavailable, source_field  # lazy: torch

        checked: set[str] = set()
        for job in jobs:
            for spec in declared.get(job.key, (job.training,)):  # what its benchmark declared
                root = root_dataset(spec.dataset)
                key = content_hash(root.spec)
                if key in checked:
                    continue
                checked.add(key)
                try:
                    service.base_data(root)
                except DataUnavailable as exc:
                    own = root_dataset(job.training.dataset).spec == root.spec
                    where = source_field(job.training.dataset if own else spec.dataset)
                    raise PreflightError(job.submission, where, exc.describe(where)) from None
        for job in jobs:
            Scorer._preflight_neural_data(job, checked)

    @staticmethod
    def _preflight_neural_data(job: Job, checked: set[str]) -> None:
        """Build every neural dataset the job's constraints and benchmark name (a missing or
        malformed file is bad input, like a missing dataset)."""
        from bioprior.registry.toolkit.data import DataUnavailable  # lazy: torch

        parts = [(f"constraints.{c.entry.name}", c) for c in job.training.constraints]
        parts.append((f"benchmarks.{job.benchmark.entry.name}", job.benchmark))
        for where, component in parts:
            for name, value in component.params:
                if not isinstance(value, NeuralDataRef):
                    continue
                key = content_hash(value.model_dump(mode="json"))
                if key in checked:
                    continue
                checked.add(key)
                try:
                    load_neural_data(value)
                except (DataUnavailable, ValueError, OSError) as exc:
                    field = f"{where}.params.{name}"
                    raise PreflightError(
                        job.submission, field, " ".join(str(exc).split())
                    ) from None

    def _announced(self, worker):
        def run(step: Step) -> Outcome:
            if step.kind != "train":  # a training reports itself (training_started, epochs)
                self.reporter.job_started(step.label)
            return worker(step)

        return run
