"""The scorer: load submissions, plan jobs, skip finished ones, run the rest through an
executor and write every outcome to the store as soon as it is ready."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .executor import Executor, JobOutcome, LocalExecutor
from .hashing import content_hash
from .paths import home as default_home
from .planner import Job, PlanSummary, plan, summarize
from .plugins import Registry, get_registry
from .progress import Reporter
from .store import ResultStore
from .submission import LoadedSubmission, load_submission


class PreflightError(Exception):
    """Bad input found before running: which submission, which field, what is wrong."""

    def __init__(self, submission: str, field: str, message: str):
        self.submission, self.field, self.message = submission, field, message
        super().__init__(f"{submission}: {field}: {message}")


@dataclass
class ScoreReport:
    plan: PlanSummary
    outcomes: list[JobOutcome] = field(default_factory=list)

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
    ):
        self.store = store
        self.registry = registry or get_registry()
        self.device_name = device
        self.home = Path(home) if home else default_home()
        self.executor = executor or LocalExecutor()
        self.reporter = reporter or Reporter()

    def load(self, paths: Iterable[str | Path]) -> list[LoadedSubmission]:
        return [load_submission(p, self.registry) for p in paths]

    def plan(self, submissions: Sequence[LoadedSubmission]) -> tuple[list[Job], PlanSummary]:
        jobs = plan(submissions)
        return jobs, summarize(jobs, self.store.done())

    def run(self, summary: PlanSummary) -> ScoreReport:
        from .runner import JobRunner
        from .trainer import select_device
        from .training import TrainingService

        report = ScoreReport(summary)
        if not summary.todo:
            return report
        service = TrainingService(self.home, select_device(self.device_name), self.reporter)
        self.preflight(summary.todo, service)
        worker = JobRunner(service, self.registry)
        self.reporter.jobs_started(len(summary.todo))
        try:
            for outcome in self.executor.run(summary.todo, self._announced(worker)):
                self.store.write(outcome)
                report.outcomes.append(outcome)
                self.reporter.job_finished(outcome.job.label, outcome.status, outcome.score)
                if outcome.error:
                    self.reporter.message(f"    error: {outcome.error}")
        finally:
            self.reporter.close()
        return report

    @staticmethod
    def preflight(jobs: Sequence[Job], service) -> None:
        """Load every source dataset once before any job runs: a missing dataset is bad input
        (raised as :class:`PreflightError`), not a string of failed jobs."""
        from .data import DataUnavailable, source_field

        checked: set[str] = set()
        for job in jobs:
            root = job.training.dataset
            while root.source is not None:
                root = root.source
            key = content_hash(root.spec)
            if key in checked:
                continue
            checked.add(key)
            try:
                service.base_data(root)
            except DataUnavailable as exc:
                where = source_field(job.training.dataset)
                raise PreflightError(job.submission, where, exc.describe(where)) from None
        for job in jobs:
            Scorer._preflight_neural_data(job, checked)

    @staticmethod
    def _preflight_neural_data(job: Job, checked: set[str]) -> None:
        """Build every neural dataset the job's constraints and benchmark name (a missing or
        malformed file is bad input, like a missing dataset)."""
        from .data import DataUnavailable
        from .neural import NeuralDataRef, load_neural_data

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
        def run(job: Job) -> JobOutcome:
            self.reporter.job_started(job.label)
            return worker(job)

        return run
