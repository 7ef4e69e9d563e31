"""``bioprior validate`` and ``bioprior score``: the options parsed once
(:class:`.ScoreOptions`), the scoring sequence run (:class:`.ScoringSession`), what it gives
printed; bad input is one line per error and exit 2."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import typer

from bioprior.registry.base.devices import DeviceError
from bioprior.registry.base.progress import for_output, human_seconds
from bioprior.registry.base.stops import Stopped
from bioprior.registry.base.threads import ThreadsError
from bioprior.registry.cli.common import console, fail, short
from bioprior.registry.cli.results import print_results
from bioprior.registry.hooks.loading import get_registry
from bioprior.registry.scoring.options import ExecutionOptions, OptionError, ScoreOptions
from bioprior.registry.scoring.scorer import PreflightError
from bioprior.registry.scoring.session import Planned, ScoreResult, ScoringSession
from bioprior.registry.store.results import StoreError, full_disk_hint
from bioprior.registry.submissions.loading import InvalidSubmission, load_submission


def validate(files: list[Path] = typer.Argument(..., help="Submission YAML files.")) -> None:
    """Check submission files; exit 0 when all are valid, else 2 with FILE:LINE: field: message.

    Reads nothing but the files (and the files they name, by their headers) and writes nothing.
    Errors are de-duplicated and capped per file; every echoed value is truncated."""
    errors: list[str] = []
    for file in files:
        try:
            loaded = load_submission(file, get_registry())
        except InvalidSubmission as exc:
            errors.extend(map(str, exc.errors))
            continue
        n = len(loaded.variants) * len(loaded.submission.seeds) * len(loaded.submission.benchmarks)
        typer.echo(f"{short(file)}: ok ({len(loaded.variants)} variants, {n} jobs)")
    if errors:
        fail(errors)


def score(
    files: list[Path] = typer.Argument(..., help="Submission YAML files."),
    db: Path | None = typer.Option(
        None, "--db", help="Results database (default $BIOPRIOR_HOME/results.sqlite)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]."),
    threads: str | None = typer.Option(
        None,
        "--threads",
        metavar="N",
        help="CPU threads for torch (default: the usable cores not already busy; also "
        "$BIOPRIOR_THREADS). 'auto' chooses.",
    ),
    workers: str | None = typer.Option(
        None,
        "--workers",
        metavar="N",
        help="CPU: steps run at once, each in a process with its share of the threads "
        "(default auto: one per thread for the trainings that can run side by side).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan and print, run nothing."),
    verify: int | None = typer.Option(
        None,
        "--verify",
        min=1,
        metavar="N",
        help="Retrain N finished jobs without the weights cache and report drift from the "
        "stored numbers (exit 1 on drift); runs nothing else.",
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Where datasets live (default $BIOPRIOR_DATA)."
    ),
    executor: str = typer.Option(
        "local", "--executor", help="local | ray (needs the ray extra of bioprior)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="HOST:PORT of a Ray cluster's head (default: a local Ray)."
    ),
    isolate: bool = typer.Option(
        False, "--isolate", help="Run each step in its own process (implied by the limits)."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Wall-time limit per step, seconds (then: failed, timeout)."
    ),
    memory_limit: str | None = typer.Option(
        None, "--memory-limit", help="Memory limit per step, e.g. 4G (then: out_of_memory)."
    ),
    retries: int | None = typer.Option(
        None, "--retries", help="Retries of a step that timed out, crashed or ran out of memory."
    ),
    lease: float = typer.Option(
        60.0, "--lease", help="Seconds a claim on a step lasts unless renewed (shared databases)."
    ),
    ray_timeout: float = typer.Option(
        60.0, "--ray-timeout", help="Seconds to wait for the Ray cluster to answer."
    ),
    weights_transport: str | None = typer.Option(
        None,
        "--weights-transport",
        metavar="shared|object-store",
        help="Ray: how trained weights reach the workers: shared (default: $BIOPRIOR_HOME/weights "
        "on a path every node sees) | object-store (Ray's object store; no shared path).",
    ),
    cpus_per_step: float = typer.Option(1.0, "--cpus-per-step", help="Ray: CPUs per step."),
    gpus_per_step: float | None = typer.Option(
        None, "--gpus-per-step", help="Ray: GPUs per step, fractional for small models."
    ),
    batch: int | None = typer.Option(
        None,
        "--batch",
        min=1,
        help="Most trainings batched into one model (default: what fits in memory, where "
        "batching pays: on a GPU, or on a CPU for launch-bound models; 1 trains one at a time).",
    ),
) -> None:
    """Train and evaluate submissions x benchmarks; resumes where a previous run stopped."""
    execution = ExecutionOptions(
        executor=executor,
        ray_address=ray_address,
        isolate=isolate,
        timeout_s=timeout,
        memory=memory_limit,
        retries=retries,
        lease_s=lease,
        cpus_per_step=cpus_per_step,
        gpus_per_step=gpus_per_step,
        init_timeout_s=ray_timeout,
        weights_transport=weights_transport,
    )
    try:
        options = ScoreOptions.parse(
            device=device,
            threads=threads,
            workers=workers,
            db=db,
            data_root=data_root,
            execution=execution,
            batch=batch,
            dry_run=dry_run,
            verify=verify,
        )
    except DeviceError as exc:
        fail(f"--device: {exc}")
    except (ThreadsError, OptionError) as exc:
        fail(str(exc))
    reporter = for_output()
    session = ScoringSession(options, reporter, get_registry())
    try:
        with session:
            try:
                result = session.score(files)
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (base/stops.py)
                _stopped(session, options, exc)
    except InvalidSubmission as exc:
        fail(list(map(str, exc.errors)))
    except OptionError as exc:  # e.g. an unreachable --ray-address, an unwritable home
        fail(str(exc))
    except PreflightError as exc:  # e.g. a dataset that is not under the data root
        fail(f"{session.path_of(exc.submission)}: {exc.field}: {exc.message}")
    except StoreError as exc:  # a stored row that is not what bioprior writes
        fail(f"--db: {short(exc, 300)}")
    except sqlite3.Error as exc:  # a damaged database, a full disk: every stored row is kept
        fail(f"--db: {options.db}: {short(exc, 200)}{full_disk_hint(options.db)}")
    if result.drifts is not None:
        _print_verify(result, session.store.path)
    elif result.report is None:
        planned = result.planned
        _print_plan(reporter.console, planned)
    else:
        _print_estimate_vs_actual(reporter.console, result)
        print_results(console(), result.rows)
        typer.echo(f"results in {options.db}")
        if result.report.failed:
            typer.echo(f"{len(result.report.failed)} job(s) failed", err=True)
            raise typer.Exit(1)


def _stopped(session: ScoringSession, options: ScoreOptions, exc: KeyboardInterrupt) -> None:
    """Where a stopped run was (one line on stderr), then the exit of the signal that stopped
    it (130 for Ctrl-C, 143 for SIGTERM)."""
    from bioprior.registry.engine.checkpoint import INTERVAL_ENV, interval_from_env  # lazy: torch

    why = "SIGTERM" if isinstance(exc, Stopped) else "Ctrl-C"
    stored, total = session.stored_of_plan()
    try:
        checkpoints = interval_from_env() is not None
    except ValueError:  # a bad value: said where the trainings read it
        checkpoints = False
    trainings = (
        "trainings under way saved a checkpoint"
        if checkpoints
        else f"no checkpoints ({INTERVAL_ENV}): trainings under way start over"
    )
    if not total:
        typer.echo(f"stopped ({why}) before any step ran; nothing was written", err=True)
    else:
        typer.echo(
            f"stopped ({why}): {stored} of {total} jobs stored in {options.db}; {trainings}; "
            "run the same command again to resume",
            err=True,
        )
    raise typer.Exit(exc.exit_code if isinstance(exc, Stopped) else 130)


def _print_plan(out, planned: Planned) -> None:
    """The plan's steps (trainings, then evaluations), what is cached, estimates per step."""
    from rich.markup import escape

    from bioprior.registry.engine.estimate import human_flops  # lazy: torch

    summary, estimates, workers = planned.summary, planned.estimates, planned.sharing.workers
    for spec in summary.cached:
        out.print(f"  cached   {escape(spec.label)}  \\[{spec.key}]")
    total_s = total_f = 0.0
    for step in summary.steps:
        est = estimates.get(step.key)
        cost = ""
        if est is not None:
            total_s, total_f = total_s + est.seconds, total_f + est.flops
            cost = f"  ~{human_seconds(est.seconds)}, {human_flops(est.flops)}"
        note = f"  ({step.note})" if getattr(step, "note", "") else ""
        after = f"  after {', '.join(step.depends_on)}" if step.depends_on else ""
        out.print(
            f"  {step.kind:<8} {escape(step.label)}  \\[{step.key}]{escape(cost + note + after)}"
        )
        if est is not None and est.note:
            out.print(f"{'':11}{escape(est.note)}", style="dim")
        if step.kind == "train" and len(step.members) > 1:
            for spec in step.members:
                out.print(f"             - {escape(spec.label)}  \\[{spec.key}]")
    if estimates:
        side = ""
        if workers > 1:
            wall = planned.wall_seconds() or 0.0
            side = f"; ~{human_seconds(wall)} of wall time with {workers} workers side by side"
        out.print(f"estimate: ~{human_seconds(total_s)}, {human_flops(total_f)} in total{side}")


def _print_estimate_vs_actual(out, result: ScoreResult) -> None:
    from rich.markup import escape

    report, workers = result.report, result.planned.sharing.workers
    if not report.estimates:
        return
    actual = {o.key: o.duration_s for o in [*report.trainings, *report.outcomes]}
    lines = []
    for step in report.plan.steps:
        if step.key in actual and step.key in report.estimates:
            e, a = report.estimates[step.key], actual[step.key]
            lines.append((step, e, a))
    if not lines:
        return
    out.print("estimate vs actual:")
    for step, e, a in lines:
        out.print(
            f"  {step.kind:<8} {escape(step.label)}: ~{human_seconds(e)} vs {human_seconds(a)}"
        )
    te, ta = sum(e for _, e, _ in lines), sum(a for _, _, a in lines)
    out.print(f"  total: ~{human_seconds(te)} estimated, {human_seconds(ta)} actual")
    if workers > 1:
        wall = result.planned.wall_seconds() or 0.0
        out.print(
            f"  wall time with {workers} workers side by side: ~{human_seconds(wall)} estimated, "
            f"{human_seconds(result.wall_s)} actual"
        )


def _print_verify(result: ScoreResult, db: Path) -> None:
    """One line per job rerun; exit 1 on drift, 2 where there was nothing to rerun."""
    names = ", ".join(s.submission.name for s in result.loaded)
    if not result.drifts:
        fail(f"--verify: no finished jobs of {names} in {db} (run `bioprior score` first)")
    for drift in result.drifts:
        typer.echo(f"  {drift.describe()}")
    drifted = [d for d in result.drifts if d.drifted]
    typer.echo(
        f"verify: {len(drifted)} of {len(result.drifts)} job(s) drifted "
        f"({result.finished} finished in all)"
    )
    if drifted:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(score)
