"""The one scoring sequence of ``bioprior score`` and :func:`bioprior.score`.

::

    options = ScoreOptions.parse(...)                   # checked before anything is opened
    with ScoringSession(options, reporter) as session:  # the results database, threads, data root
        result = session.score(files)                   # load, plan, executor, run, close

``session.score`` is ``load`` then ``verify`` (``--verify N``) or ``plan``, then ``run`` unless
it is a dry run; a front end that prints between the steps calls them itself. Bad input is
raised, typed: :class:`.options.OptionError` (one line naming the option),
:class:`.scorer.PreflightError`, :class:`.loading.InvalidSubmission`; the front ends say it
their way (the CLI: one line and exit 2; the API: the exception).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from bioprior.registry.base import denormals, stops
from bioprior.registry.base import threads as thread_choice
from bioprior.registry.base.allocator import release_freed_memory
from bioprior.registry.base.paths import using_data_root
from bioprior.registry.base.progress import Reporter, human_seconds
from bioprior.registry.execution.scheduling import wall_time
from bioprior.registry.hooks.loading import Registry, get_registry
from bioprior.registry.planning.jobs import Job
from bioprior.registry.planning.steps import PlanSummary
from bioprior.registry.scoring import verify as verification
from bioprior.registry.scoring.executors import Execution, build_executor, runs_in_process
from bioprior.registry.scoring.options import OptionError, ScoreOptions
from bioprior.registry.scoring.scorer import Scorer, ScoreReport
from bioprior.registry.scoring.verify import Drift
from bioprior.registry.scoring.workers import WorkerPlan, plan_workers
from bioprior.registry.store.results import ResultStore, StoreError, full_disk_hint
from bioprior.registry.submissions.files import writable_problem
from bioprior.registry.submissions.loading import LoadedSubmission, load_submission

#: the share of the estimated wall time that starting the longest trainings first must save
LONGEST_FIRST_GAIN = 0.05
#: the share of the estimated wall time that evaluating after the trainings must save, and the
#: least it must save (a short run keeps its results as it goes)
EVALUATIONS_LAST_GAIN, EVALUATIONS_LAST_MIN_S = 0.05, 600.0


@dataclass
class Planned:
    """A run's plan: the jobs, the steps left to do, how the steps share the threads, the
    estimates (where plugin code may run in this process) and whether it does."""

    jobs: list[Job]
    summary: PlanSummary
    sharing: WorkerPlan
    estimates: dict[str, Any] = field(default_factory=dict)
    in_process: bool = True

    def wall_seconds(self) -> float | None:
        """The estimated wall time of the steps left, the run's workers side by side (the
        scheduler on a virtual clock); None without estimates."""
        if not self.estimates:
            return None
        return self._wall(self.summary.steps)

    def _seconds(self) -> dict[str, float]:
        """Each estimated step's seconds, by step key."""
        return {key: e.seconds for key, e in self.estimates.items()}

    def _wall(self, steps: Sequence[Any]) -> float:
        seconds = self._seconds()
        return wall_time(steps, lambda step: seconds.get(step.key, 0.0), self.sharing.workers)

    def start_longest_first(self, gain: float = LONGEST_FIRST_GAIN) -> tuple[float, float] | None:
        """Reorder each seed's trainings longest first where that saves at least ``gain`` of
        the estimated wall time with the run's workers (Fig. 4A's three HMAX trainings of 19,
        23 and 32 h on two workers: the longest planned last ran alone for its last day);
        (wall time before, after) when it does, None when the plan's order stays (one worker,
        no estimates, trainings of about one length: their order is then the plan's, not the
        calibration's noise)."""
        return self._reorder(self.summary.longest_first(self._seconds()), gain)

    def evaluate_after_trainings(
        self, gain: float = EVALUATIONS_LAST_GAIN
    ) -> tuple[float, float] | None:
        """Let the evaluations wait for the trainings still to start (rather than each going
        first once its trainings are ready) where that saves at least ``gain`` of the estimated
        wall time with the run's workers: Fig. 4A's convolutional HMAX, evaluated for 2.5 h by
        the worker that trained it while the baseline's 15 h waited, then the other worker idle
        for hours at the end. (wall time before, after) when it does, None when the ready-first
        rule stays (one worker, no estimates, a gain under ``gain`` or under ten minutes:
        results as a sweep goes)."""
        steps = self.summary.evaluations_after_trainings()
        return self._reorder(steps, gain, EVALUATIONS_LAST_MIN_S)

    def _reorder(
        self, steps: list[Any], gain: float, least_s: float = 0.0
    ) -> tuple[float, float] | None:
        """Take ``steps`` as the plan where their estimated wall time is shorter by at least
        ``gain`` of it and ``least_s`` seconds: (before, after); else None, the plan unchanged
        (also with one worker, where no order changes the wall time, or without estimates)."""
        if self.sharing.workers < 2 or not self.estimates:
            return None
        before, after = self._wall(self.summary.steps), self._wall(steps)
        if not after < min(before * (1.0 - gain), before - least_s):
            return None
        self.summary.steps = steps
        return before, after


@dataclass
class ScoreResult:
    """What a run gives back: its plan, the report of what ran (None for a dry run or
    ``--verify``), the wall time, the stored rows of its submissions, or the drifts found."""

    loaded: list[LoadedSubmission]
    planned: Planned | None = None
    report: ScoreReport | None = None
    wall_s: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    drifts: list[Drift] | None = None  # --verify: one per job rerun
    finished: int = 0  # --verify: the finished jobs there were


def open_store(options: ScoreOptions) -> ResultStore:
    """The results database (a dry run on a fresh home creates nothing)."""
    try:
        return ResultStore(
            ":memory:" if options.dry_run and not options.db.exists() else options.db
        )
    except StoreError as exc:  # not a store (one line that names the file)
        raise OptionError("--db", str(exc)) from exc
    except Exception as exc:  # sqlite errors on a bad path, a full disk
        hint = full_disk_hint(options.db)
        raise OptionError("--db", f"cannot open {options.db}: {exc}{hint}") from exc


def check_writable(db: Path, home: Path) -> None:
    """Raise :class:`OptionError` before anything trains unless everything a run writes can be
    written: the database (already opened), the weights cache and the stimulus cache."""
    folders = [("BIOPRIOR_HOME", home / "weights"), ("BIOPRIOR_HOME", home / "stimuli")]
    if str(db) != ":memory:":
        folders.insert(0, ("--db", db.parent))
    for option, folder in folders:
        problem = writable_problem(folder)
        if problem:
            raise OptionError(option, f"{problem} (nothing was run)")


class ScoringSession:
    """One ``score`` run. Entering opens the results database and applies the thread choice and
    the data root; leaving closes the database (and restores the caller's thread count where
    ``options.restore_threads``)."""

    def __init__(self, options: ScoreOptions, reporter: Reporter, registry: Registry | None = None):
        self.options, self.reporter = options, reporter
        self.registry = registry or get_registry()
        self.loaded: list[LoadedSubmission] = []
        self.planned: Planned | None = None  # the last plan made
        self._stack = ExitStack()

    def __enter__(self) -> Self:
        options = self.options
        self.store = open_store(options)
        with ExitStack() as stack:
            stack.enter_context(self.store)
            if options.restore_threads:
                stack.enter_context(thread_choice.using(options.threads))
            else:  # subnormals flushed for the run (base/denormals.py), then as they were
                stack.enter_context(denormals.flushed())
                thread_choice.apply(options.threads)
            stack.enter_context(using_data_root(options.data_root))
            stack.enter_context(stops.stoppable())  # SIGTERM: steps checkpoint, then it stops
            self._stack = stack.pop_all()
        self.scorer = Scorer(
            self.store,
            self.registry,
            device=options.device,
            reporter=self.reporter,
            max_batch=options.batch,
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def stored_of_plan(self) -> tuple[int, int]:
        """(jobs of the last plan stored as finished, jobs in it): where a stopped run was."""
        if self.planned is None:
            return 0, 0
        done = self.store.done()
        jobs = self.planned.jobs
        return sum((job.submission, job.key) in done for job in jobs), len(jobs)

    def path_of(self, submission: str) -> Path | None:
        """The file a loaded submission came from (for messages about it)."""
        return next((s.path for s in self.loaded if s.submission.name == submission), None)

    def load(self, submissions: Sequence[str | Path | LoadedSubmission]) -> list[LoadedSubmission]:
        """Submission files (or submissions loaded already), checked against the registry."""
        self.loaded = [
            s if isinstance(s, LoadedSubmission) else load_submission(s, self.registry)
            for s in submissions
        ]
        return self.loaded

    def verify(self, count: int) -> tuple[list[Drift], int]:
        """``--verify N``: retrain up to ``count`` finished jobs without the weights cache."""
        names = ", ".join(s.submission.name for s in self.loaded)
        self.reporter.message(
            f"verify: retraining up to {count} finished job(s) of {names} without the weights "
            f"cache; {self.options.threads.describe()}"
        )
        return verification.verify(
            self.loaded, self.store, self.registry, count, self.options.device, self.reporter
        )

    def plan(self) -> Planned:
        """Plan the loaded submissions, share the threads among the workers, say so (the plan
        line) and estimate each step where plugin code may run in this process."""
        options, scorer = self.options, self.scorer
        in_process = options.unclaimed_in_process or runs_in_process(
            options.execution, self.loaded, options.device
        )
        if not in_process and options.batch is None:
            scorer.max_batch = 1  # no batching calibration in the driver: steps are isolated
        jobs, summary = scorer.plan(self.loaded)
        sharing = plan_workers(
            options.execution,
            lambda: scorer.fresh(jobs),
            options.device,
            options.threads,
            scorer if in_process else None,
        )
        self.reporter.message(f"plan: {summary.describe()}; {sharing.described}")
        planned = self.planned = Planned(jobs, summary, sharing, in_process=in_process)
        if options.estimate and summary.todo and in_process:
            each = thread_choice.ThreadChoice(
                sharing.per_worker, "--workers", options.threads.cores
            )
            share = thread_choice.CoreShare.now(
                sharing.per_worker, sharing.workers, options.threads.cores
            )
            with thread_choice.using(each):  # what each worker will have
                planned.estimates = scorer.estimate(summary, share)
            release_freed_memory()  # the calibration's, before workers are forked from us
            for walls, order in (
                (planned.start_longest_first(), "the longest trainings of each seed start first"),
                (planned.evaluate_after_trainings(), "the evaluations wait for the trainings"),
            ):
                if walls is not None:
                    self.reporter.message(
                        f"order: {order}, ~{human_seconds(walls[1])} of wall time instead of "
                        f"~{human_seconds(walls[0])}"
                    )
        return planned

    def run(self, planned: Planned) -> ScoreResult:
        """Check that everything can be written, build the executor, run the steps left to do,
        close the executor; the rows of the loaded submissions."""
        options, scorer, summary = self.options, self.scorer, planned.summary
        execution: Execution | None = None
        try:
            if summary.todo:
                check_writable(options.db, scorer.home)
                if not options.unclaimed_in_process or planned.sharing.workers > 1:
                    execution = build_executor(
                        options.execution,
                        self.loaded,
                        options.device,
                        db=options.db,
                        home=scorer.home,
                        reporter=self.reporter,
                        sharing=planned.sharing,
                    )
                    scorer.executor = execution.executor
            self._say_estimate(planned)
            started = time.perf_counter()
            report = scorer.run(summary, planned.estimates)
            wall_s = time.perf_counter() - started
        finally:
            if execution is not None:
                execution.close()
        names = {s.submission.name for s in self.loaded}
        rows = [r for r in self.store.rows() if r["submission"] in names]
        return ScoreResult(self.loaded, planned, report, wall_s, rows)

    def _say_estimate(self, planned: Planned) -> None:
        """Before a run: its estimated wall time and when it would end (a long run's first
        question; the end of the run compares it with what it took)."""
        wall = planned.wall_seconds() if planned.summary.todo else None
        if wall is None:
            return
        ends = time.strftime("%a %H:%M", time.localtime(time.time() + wall))
        workers = planned.sharing.workers
        side = f" with {workers} workers side by side" if workers > 1 else ""
        resuming = sum(e.resumes_at is not None for e in planned.estimates.values())
        if resuming:
            side += f" ({resuming} training{'s' * (resuming > 1)} resume from checkpoints)"
        self.reporter.message(
            f"estimate: ~{human_seconds(wall)} of wall time{side}, to about {ends}"
        )

    def score(self, submissions: Sequence[str | Path | LoadedSubmission]) -> ScoreResult:
        """The whole sequence: load, then verify (``options.verify``) or plan and, unless
        ``options.dry_run``, run."""
        loaded = self.load(submissions)
        if self.options.verify is not None:
            drifts, finished = self.verify(self.options.verify)
            return ScoreResult(loaded, drifts=drifts, finished=finished)
        planned = self.plan()
        if self.options.dry_run:
            return ScoreResult(loaded, planned)
        return self.run(planned)


def score_submissions(
    submissions: Sequence[str | Path | LoadedSubmission],
    options: ScoreOptions,
    reporter: Reporter,
    registry: Registry | None = None,
) -> ScoreResult:
    """Score ``submissions`` (files, or submissions loaded already) as ``options`` say."""
    with ScoringSession(options, reporter, registry) as session:
        return session.score(submissions)
