"""The ``bioprior`` command line (typer + rich). Bad input exits 2 with one line per error."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from bioprior.registry.cli.plain_help import PlainHelpTyper
from bioprior.registry.hooks.entries import KINDS

app = PlainHelpTyper(
    help="bioprior: score biologically constrained vision models against benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Also print notices that ask nothing of you (e.g. torchvision's compiled ops "
        "missing, which only detection ops need).",
    ),
) -> None:
    """bioprior: score biologically constrained vision models against benchmarks."""
    if verbose:
        from bioprior.registry.base.torchvision_compat import set_verbose

        set_verbose(True)


def _fail(lines: list[str] | str, code: int = 2) -> None:
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(
            f"error: {line}" if not line.split(":", 1)[0].endswith((".yaml", ".yml")) else line,
            err=True,
        )
    raise typer.Exit(code)


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=140)


class _PluginsGroup(TyperGroup):
    """``bioprior plugins [PATTERN]`` lists (as ``plugins list``); ``plugins check`` checks."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


plugins_app = typer.Typer(
    cls=_PluginsGroup,
    help="List registered plugins (bioprior plugins [PATTERN] [--kind K] [--json]) or check "
    "them against the conformance kit (bioprior plugins check [DIST ...]).",
)
app.add_typer(plugins_app, name="plugins")


@plugins_app.command("list")
def plugins(
    pattern: str | None = typer.Argument(None, help="Glob on plugin names, e.g. 'small_*'."),
    kind: str | None = typer.Option(None, "--kind", "-k", help=f"One of: {', '.join(KINDS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects."),
) -> None:
    """List registered plugins (and the ones that failed to load)."""
    from bioprior.registry.hooks.loading import get_registry

    if kind is not None and kind not in KINDS:
        _fail(f"--kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    registry = get_registry()
    entries = registry.list(kind, pattern)
    failures = [f for f in registry.failures if kind is None or f.kind in (None, kind)]
    if as_json:
        typer.echo(
            json.dumps([e.summary() for e in entries] + [f.summary() for f in failures], indent=2)
        )
        return
    from rich.table import Table

    table = Table(title="bioprior plugins")
    for col in ("kind", "name", "provider", "version", "parameters"):
        table.add_column(col)
    for e in entries:
        params = ", ".join(f"{n}={p['default']!r}" for n, p in e.summary()["params"].items())
        table.add_row(e.kind, e.name, f"{e.provider} {e.provider_version}", e.version, params)
    console = _console()
    console.print(table)
    for f in failures:
        console.print(
            f"[red]failed[/red] {f.provider} {f.provider_version} ({f.entry_point}): {f.error}"
        )


@plugins_app.command("check")
def plugins_check(
    dists: list[str] | None = typer.Argument(
        None, help="Distributions to check (default: every third-party one; 'bioprior': built-ins)."
    ),
    names: list[str] = typer.Option(
        [], "--name", "-n", help="Only entries matching this glob (name or kind:name); repeatable."
    ),
    slow: bool = typer.Option(False, "--slow", help="Also run checks marked slow."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of results."),
) -> None:
    """Run the conformance kit (bioprior.testing) on installed plugin distributions.

    Prints entry, check, ok / failed / expected failure / skipped and the message; exit 1 when a
    check fails."""
    from bioprior.registry.hooks.loading import (
        BUILTIN_DISTRIBUTION,
        get_registry,
        normalize_distribution,
    )

    registry = get_registry()
    installed = sorted({normalize_distribution(e.provider) for e in registry.list()})
    if not dists:
        dists = [d for d in installed if d != BUILTIN_DISTRIBUTION]
        if not dists:
            _fail(
                "DIST: no third-party plugin distributions are installed; name one "
                f"(installed: {', '.join(installed)})"
            )
    unknown = [d for d in dists if normalize_distribution(d) not in installed]
    if unknown:
        _fail(
            f"DIST: {', '.join(unknown)} registers no entries (installed: {', '.join(installed)}); "
            "see `bioprior plugins` for ones that failed to load"
        )
    from bioprior.testing import checks_for, run_checks
    from bioprior.testing.builtin import config_for

    checks = []
    for dist in dists:
        config, expected, slow_checks = config_for(dist)
        try:
            checks += checks_for(
                distribution=dist,
                names=names or None,
                registry=registry,
                config=config,
                expected_failed_checks=expected,
                slow_checks=slow_checks,
            )
        except LookupError as exc:
            _fail(f"--name: {exc}")
    results = run_checks(checks, include_slow=slow)
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        from rich.table import Table

        colour = {"ok": "green", "failed": "red", "expected failure": "yellow"}
        table = Table(title=f"bioprior plugins check {' '.join(dists)}")
        for col in ("entry", "check", "status", "message"):
            table.add_column(col, overflow="fold")
        for r in results:
            style = colour.get(r.status, "dim")
            table.add_row(r.entry, r.check, f"[{style}]{r.status}[/{style}]", r.message)
        console = _console()
        console.print(table)
        counts = {
            s: sum(r.status == s for r in results) for s in dict.fromkeys(r.status for r in results)
        }
        console.print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if failed:
        raise typer.Exit(1)


@app.command("new-plugin")
def new_plugin(
    name: str = typer.Argument(..., help="Package name, e.g. my-noise -> bioprior-my-noise."),
    kind: str = typer.Option(
        "constraint", "--kind", "-k", help="model | constraint | dataset | benchmark."
    ),
    output: Path = typer.Option(Path("."), "--output", "-o", help="Folder to create it in."),
) -> None:
    """Create a ready plugin package from bioprior's template.

    pyproject with the entry point, the module, a conformance test, a speed test, a README, an
    example submission and a CI workflow that runs pytest."""
    from bioprior.testing.scaffold import ScaffoldError, render_plugin

    try:
        root = render_plugin(name, kind, output)
    except ScaffoldError as exc:
        _fail(str(exc))
    typer.echo(f"created {root}")
    typer.echo(f"next: cd {root} && pip install -e '.[test]' && pytest")


@app.command()
def schema(
    kind: str = typer.Argument(..., help=f"'submission' or a plugin kind ({', '.join(KINDS)})."),
    name: str | None = typer.Argument(None, help="Plugin name (not for 'submission')."),
) -> None:
    """Print the JSON Schema of a submission or of a plugin's parameters."""
    if kind == "submission":
        from bioprior.registry.submissions.schema import Submission

        typer.echo(json.dumps(Submission.model_json_schema(), indent=2))
        return
    if kind not in KINDS:
        _fail(f"KIND: must be 'submission' or one of {', '.join(KINDS)} (got {kind!r})")
    if not name:
        _fail(f"NAME: which {kind}? (see `bioprior plugins --kind {kind}`)")
    from bioprior.registry.hooks.loading import UnknownPluginError, get_registry

    try:
        entry = get_registry().get(kind, name)
    except UnknownPluginError as exc:
        _fail(f"NAME: {exc}")
    out = entry.params.model_json_schema()
    out["title"] = f"{kind} {entry.name} (version {entry.version})"
    out["description"] = "\n".join(x for x in (entry.description, entry.citation) if x)
    typer.echo(json.dumps(out, indent=2))


@app.command()
def validate(files: list[Path] = typer.Argument(..., help="Submission YAML files.")) -> None:
    """Check submission files; exit 0 when all are valid, else 2 with FILE:LINE: field: message.

    Reads nothing but the files (and the files they name, by their headers) and writes nothing.
    Errors are de-duplicated and capped per file; every echoed value is truncated."""
    from bioprior.registry.hooks.loading import get_registry
    from bioprior.registry.submissions.loading import InvalidSubmission, load_submission

    errors: list[str] = []
    for file in files:
        try:
            loaded = load_submission(file, get_registry())
        except InvalidSubmission as exc:
            errors.extend(map(str, exc.errors))
            continue
        n = len(loaded.variants) * len(loaded.submission.seeds) * len(loaded.submission.benchmarks)
        typer.echo(f"{_short(file)}: ok ({len(loaded.variants)} variants, {n} jobs)")
    if errors:
        _fail(errors)


def _short(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@app.command()
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
    from bioprior.registry.base import threads as thread_choice
    from bioprior.registry.base.devices import DeviceError, check_device
    from bioprior.registry.base.paths import default_db, using_data_root
    from bioprior.registry.hooks.loading import get_registry
    from bioprior.registry.scoring.options import (
        ExecutionError,
        ExecutionOptions,
        check_workers,
        plan_workers,
        runs_in_process,
    )
    from bioprior.registry.submissions.loading import InvalidSubmission

    try:
        choice = thread_choice.choose(threads)
        requested_workers = thread_choice.parse(workers, "--workers")
    except thread_choice.ThreadsError as exc:
        _fail(str(exc))
    if data_root is not None and not data_root.is_dir():
        _fail(f"--data-root: {data_root} is not a directory")
    try:
        device = check_device(device, here=executor != "ray")
    except DeviceError as exc:
        _fail(f"--device: {exc}")
    options = ExecutionOptions(
        executor,
        ray_address,
        isolate,
        timeout,
        memory_limit,
        retries,
        lease,
        cpus_per_step,
        gpus_per_step,
        init_timeout_s=ray_timeout,
        data_root=str(data_root) if data_root is not None else None,
        weights_transport=weights_transport,
        workers=requested_workers,
    )
    try:
        options.check()
        check_workers(options, device)
    except ExecutionError as exc:
        _fail(str(exc))
    from bioprior.registry.base.progress import for_output
    from bioprior.registry.scoring.scorer import PreflightError, Scorer
    from bioprior.registry.store.results import ResultStore

    registry = get_registry()
    db_path = db or default_db()
    try:  # a dry run on a fresh home creates nothing
        store = ResultStore(":memory:" if dry_run and not db_path.exists() else db_path)
    except Exception as exc:  # noqa: BLE001 - sqlite errors on a bad path
        _fail(f"--db: cannot open {db_path}: {exc}")
    thread_choice.apply(choice)
    with store, using_data_root(data_root):
        reporter = for_output()
        scorer = Scorer(store, registry, device=device, reporter=reporter, max_batch=batch)
        try:
            loaded = scorer.load(files)
        except InvalidSubmission as exc:
            _fail(list(map(str, exc.errors)))
        if verify is not None:
            _verify(loaded, store, registry, verify, device, reporter, choice)
            return
        paths = {s.submission.name: s.path for s in loaded}
        execution = None
        try:
            in_process = runs_in_process(options, loaded, device)
            if not in_process and batch is None:
                scorer.max_batch = 1  # no batching calibration in the driver: steps are isolated
            jobs, summary = scorer.plan(loaded)
            sharing = plan_workers(
                options, lambda: scorer.fresh(jobs), device, choice, scorer if in_process else None
            )
            n_workers, per_worker = sharing.workers, sharing.per_worker
            reporter.console.print(f"plan: {summary.describe()}; {sharing.described}", markup=False)
            # estimates run a forward of every model: only where plugin code runs in this process
            estimates = {}
            if summary.todo and in_process:
                each = thread_choice.ThreadChoice(per_worker, "--workers", choice.cores)
                with thread_choice.using(each):  # what each worker will have
                    estimates = scorer.estimate(summary)
            if dry_run:
                _print_plan(reporter.console, summary, estimates, n_workers)
                return
            if summary.todo:
                _check_writable(db_path, scorer.home)
                execution = _execution(
                    options, loaded, db_path, device, reporter, n_workers, per_worker
                )
                scorer.executor = execution.executor
            started = time.perf_counter()
            report = scorer.run(summary, estimates)
            wall_s = time.perf_counter() - started
        except ExecutionError as exc:  # e.g. an unreachable --ray-address
            _fail(str(exc))
        except PreflightError as exc:  # e.g. a dataset that is not under the data root
            _fail(f"{paths[exc.submission]}: {exc.field}: {exc.message}")
        finally:
            if execution is not None:
                execution.close()
        _print_estimate_vs_actual(reporter.console, report, n_workers, wall_s)
        rows = [r for r in store.rows() if r["submission"] in {s.submission.name for s in loaded}]
        _print_results(_console(), rows)
        typer.echo(f"results in {db_path}")
        if report.failed:
            typer.echo(f"{len(report.failed)} job(s) failed", err=True)
            raise typer.Exit(1)


def _check_writable(db_path: Path, home: Path) -> None:
    """Exit 2 before anything trains unless everything ``score`` writes can be written: the
    database (already opened), the weights cache and the stimulus cache under the home."""
    from bioprior.registry.submissions.files import writable_problem

    for option, folder in (
        ("--db", db_path.parent),
        ("BIOPRIOR_HOME", home / "weights"),
        ("BIOPRIOR_HOME", home / "stimuli"),
    ):
        problem = writable_problem(folder)
        if problem:
            _fail(f"{option}: {problem} (nothing was run)")


def _execution(
    options, loaded, db_path: Path, device: str, reporter, workers: int = 1, threads: int = 1
):
    """The executor of ``score`` (claims in the results database; see execution.py)."""
    from bioprior.registry.base.paths import home
    from bioprior.registry.scoring.options import build_executor

    def skipped(step) -> None:
        reporter.message(f"  {step.label}: done by another scorer")

    return build_executor(
        options,
        loaded,
        db_path,
        home(),
        device,
        on_skip=skipped,
        on_message=reporter.message,
        cpu_workers=workers,
        worker_threads=threads,
    )


def _print_plan(console, summary, estimates, workers: int = 1) -> None:
    """The plan's steps (trainings, then evaluations), what is cached, estimates per step."""
    from rich.markup import escape

    from bioprior.registry.engine.estimate import human_flops, human_seconds

    for spec in summary.cached:
        console.print(f"  cached   {escape(spec.label)}  \\[{spec.key}]")
    total_s = total_f = 0.0
    for step in summary.steps:
        est = estimates.get(step.key)
        cost = ""
        if est is not None:
            total_s, total_f = total_s + est.seconds, total_f + est.flops
            cost = f"  ~{human_seconds(est.seconds)}, {human_flops(est.flops)}"
        note = f"  ({step.note})" if getattr(step, "note", "") else ""
        after = f"  after {', '.join(step.depends_on)}" if step.depends_on else ""
        console.print(
            f"  {step.kind:<8} {escape(step.label)}  \\[{step.key}]{escape(cost + note + after)}"
        )
        if step.kind == "train" and len(step.members) > 1:
            for spec in step.members:
                console.print(f"             - {escape(spec.label)}  \\[{spec.key}]")
    if estimates:
        side = f" (the steps' sum; {workers} CPU workers run them side by side)" * (workers > 1)
        console.print(f"estimate: ~{human_seconds(total_s)}, {human_flops(total_f)} in total{side}")


def _print_estimate_vs_actual(console, report, workers: int = 1, wall_s: float = 0.0) -> None:
    from rich.markup import escape

    from bioprior.registry.engine.estimate import human_seconds

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
    console.print("estimate vs actual:")
    for step, e, a in lines:
        console.print(
            f"  {step.kind:<8} {escape(step.label)}: ~{human_seconds(e)} vs {human_seconds(a)}"
        )
    te, ta = sum(e for _, e, _ in lines), sum(a for _, _, a in lines)
    console.print(f"  total: ~{human_seconds(te)} estimated, {human_seconds(ta)} actual")
    if workers > 1:
        console.print(f"  {human_seconds(wall_s)} of wall time with {workers} workers side by side")


def _verify(loaded, store, registry, count, device, reporter, choice) -> None:
    from bioprior.registry.scoring.verify import verify

    names = ", ".join(s.submission.name for s in loaded)
    reporter.console.print(
        f"verify: retraining up to {count} finished job(s) of {names} without the weights "
        f"cache; {choice.describe()}",
        markup=False,
    )
    drifts, finished = verify(loaded, store, registry, count, device, reporter)
    if not drifts:
        _fail(f"--verify: no finished jobs of {names} in {store.path} (run `bioprior score` first)")
    for drift in drifts:
        typer.echo(f"  {drift.describe()}")
    drifted = [d for d in drifts if d.drifted]
    typer.echo(
        f"verify: {len(drifted)} of {len(drifts)} job(s) drifted ({finished} finished in all)"
    )
    if drifted:
        raise typer.Exit(1)


@app.command()
def results(
    submission: str | None = typer.Option(None, "--submission", "-s", help="Only this submission."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | json | csv."),
    db: Path | None = typer.Option(None, "--db", help="Results database."),
    spec: bool = typer.Option(False, "--spec", help="JSON: include each job's full spec."),
) -> None:
    """Show stored results (the database is opened read-only: nothing is created or changed)."""
    import sqlite3

    from bioprior.registry.base.paths import default_db
    from bioprior.registry.store.results import ResultStore, StoreError

    if fmt not in {"table", "json", "csv"}:
        _fail(f"--format: must be table, json or csv (got {_short(repr(fmt), 60)})")
    db_path = db or default_db()
    try:
        with ResultStore.open_readonly(db_path) as store:
            rows = store.rows(submission=submission)
    except StoreError as exc:
        _fail(f"--db: {_short(exc, 250)}")
    except sqlite3.Error as exc:
        _fail(f"--db: cannot read {_short(db_path, 150)}: {_short(exc, 100)}")
    if submission and not rows:
        with ResultStore.open_readonly(db_path) as store:
            known = sorted({r["submission"] for r in store.rows()})
        _fail(
            f"--submission: no results for {_short(repr(submission), 80)} in "
            f"{_short(db_path, 150)}; "
            + (
                f"stored: {_short(', '.join(known), 200)}"
                if known
                else "the database has no results yet"
            )
        )
    if fmt == "json":
        public = [_public(r, spec=spec) for r in rows]
        typer.echo(json.dumps(public, indent=2, default=str))
    elif fmt == "csv":
        typer.echo(_csv(rows), nl=False)
    else:
        _print_results(_console(), rows)


PUBLIC = (
    "submission",
    "variant",
    "seed",
    "benchmark",
    "benchmark_version",
    "score",
    "metrics",
    "status",
    "error_class",
    "error",
    "duration_s",
    "device",
    "plugin_versions",
    "weights_hash",
    "job_key",
    "finished_at",
)
#: in ``--format json`` as well (``spec`` only with ``--spec``)
PUBLIC_JSON = (
    "training_key",
    "weights",
    "benchmark_params",
    "bioprior_version",
    "provenance",
    "started_at",
)


def _public(row: dict[str, Any], spec: bool = False) -> dict[str, Any]:
    out = {k: row.get(k) for k in PUBLIC}
    out.update({k: row.get(k) for k in PUBLIC_JSON})
    if spec:
        out["spec"] = row.get("spec")
    return out


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}


def _csv(rows: list[dict[str, Any]]) -> str:
    metric_cols = sorted({k for r in rows for k in _scalar_metrics(r["metrics"])})
    buf = io.StringIO()
    writer = csv.writer(buf)
    base = [c for c in PUBLIC if c not in ("metrics", "plugin_versions")]
    writer.writerow(base + [f"metrics.{m}" for m in metric_cols])
    for r in rows:
        values = [json.dumps(r[c], sort_keys=True) if c == "variant" else r[c] for c in base]
        writer.writerow(values + [_scalar_metrics(r["metrics"]).get(m) for m in metric_cols])
    return buf.getvalue()


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _variant_order(variant: dict[str, Any]) -> tuple:
    """Sort key of a variant: its values in key order, numbers as numbers (0.3 < 0.6 < 1.2)."""
    return tuple(
        (0, v, "") if isinstance(v, (int, float)) else (1, 0, json.dumps(v, sort_keys=True))
        for _, v in sorted(variant.items())
    )


def _row_order(row: dict[str, Any]) -> tuple:
    return (row["submission"], row["benchmark"], _variant_order(row["variant"]), row["seed"])


RUNNING = "_running"


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    """Numeric metrics, one per line; ``X_running`` (the last epoch's running value) is shown
    beside ``X`` instead of on a line of its own."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    lines = []
    for key, value in numeric.items():
        if key.endswith(RUNNING) and key[: -len(RUNNING)] in numeric:
            continue
        running = numeric.get(key + RUNNING)
        lines.append(
            f"{key} {_fmt(value)}" + (f" (running {_fmt(running)})" if running is not None else "")
        )
    return lines


def _results_table(rows: list[dict[str, Any]]):
    from rich.table import Table

    table = Table(title=f"{len(rows)} results")
    for col in ("submission", "variant", "seed", "benchmark", "score"):
        table.add_column(col, overflow="fold")
    table.add_column("status", no_wrap=True)  # failed (its error class)
    table.add_column("metrics", no_wrap=True, min_width=30)
    for r in sorted(rows, key=_row_order):
        variant = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["variant"].items()) or "-"
        error = r["error"] or ""
        shown = (
            (error if len(error) <= 70 else error[:69] + "…")  # whole in --format json
            if r["status"] != "ok"
            else "\n".join(_metric_lines(r["metrics"]))
        )
        table.add_row(
            r["submission"],
            variant,
            str(r["seed"]),
            r["benchmark"],
            _fmt(r["score"]),
            f"{r['status']} ({r['error_class']})" if r.get("error_class") else r["status"],
            shown,
        )
    return table


def score_legend(rows: list[dict[str, Any]]) -> list[str]:
    """One line per benchmark in ``rows``: what its ``score`` means (the entry's ``score``
    extra, else its description)."""
    from bioprior.registry.hooks.loading import UnknownPluginError, get_registry

    lines = []
    for name in sorted({r["benchmark"] for r in rows}):
        try:
            entry = get_registry().get("benchmark", name)
        except UnknownPluginError:
            continue
        meaning = entry.extra.get("score") or entry.description
        if meaning:
            lines.append(f"score of {name}: {meaning}")
    return lines


def _print_results(console, rows: list[dict[str, Any]]) -> None:
    console.print(_results_table(rows))
    for line in score_legend(rows):
        console.print(line, markup=False, highlight=False)


@app.command()
def preview(
    benchmark: str = typer.Argument(
        ..., help="A benchmark that transforms images, e.g. corruption."
    ),
    dataset: str = typer.Option(
        "digits", "--dataset", "-d", help="Dataset whose test images are shown."
    ),
    params: list[str] = typer.Option(
        [], "--params", "-p", help="Benchmark parameter KEY=VALUE (YAML value)."
    ),
    output: Path = typer.Option(Path("preview.png"), "--output", "-o", help="PNG to write."),
    count: int = typer.Option(6, "--count", min=1, max=32, help="Images per condition."),
    size: int = typer.Option(32, "--size", min=8, max=512, help="Image side in px."),
    seed: int = typer.Option(0, "--seed", help="Seed of random stimuli."),
    max_rows: int = typer.Option(
        200, "--max-rows", min=1, help="At most this many conditions (rows)."
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Where datasets live (default $BIOPRIOR_DATA)."
    ),
) -> None:
    """Write a grid of example stimuli per condition of a benchmark (what the model is tested on)."""
    import yaml
    from pydantic import ValidationError

    from bioprior.registry.hooks.loading import UnknownPluginError, get_registry

    raw: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--params: expected KEY=VALUE, got {item!r}")
        raw[key] = yaml.safe_load(value)
    registry = get_registry()
    try:
        entry = registry.get("benchmark", benchmark)
        data_entry = registry.get("dataset", dataset)
    except UnknownPluginError as exc:
        _fail(f"{'BENCHMARK' if exc.kind == 'benchmark' else '--dataset'}: {exc}")
    try:
        bench = entry.build(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        _fail(f"--params: {'.'.join(map(str, err['loc']))}: {err['msg']}")
    from bioprior.registry.base.paths import using_data_root
    from bioprior.registry.cli.preview import preview_grid
    from bioprior.registry.toolkit.data import DataUnavailable

    try:
        with using_data_root(data_root):
            data = data_entry.build({})
        rows = preview_grid(
            bench, data, output, count=count, size=size, seed=seed, max_rows=max_rows
        )
    except DataUnavailable as exc:
        _fail(f"--dataset: {exc.describe()}")
    except NotImplementedError as exc:
        _fail(f"BENCHMARK: {exc}")
    typer.echo(f"wrote {output} ({rows} conditions x {count} images)")


@app.command()
def download(
    name: str = typer.Argument(..., help="cifar10 | cifar100 | mnist | fashion_mnist."),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Where to put it (default $BIOPRIOR_DATA)."
    ),
) -> None:
    """Download a torchvision dataset into the data root (needs network access)."""
    from bioprior.registry.base.paths import using_data_root
    from bioprior.registry.hooks.loading import UnknownPluginError, get_registry

    try:
        entry = get_registry().get("dataset", name)
    except UnknownPluginError as exc:
        _fail(f"NAME: {exc}")
    if "download" not in entry.params.model_fields:
        _fail(f"NAME: {name} is not downloadable")
    with using_data_root(data_root):
        data = entry.build({"download": True})
    typer.echo(f"{name}: {len(data.train_x)} training and {len(data.test_x)} test images ready")


@app.command()
def report(
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write the site into."),
    db: Path | None = typer.Option(None, "--db", help="Results database (read-only)."),
    submission: list[str] = typer.Option(
        [], "--submission", "-s", help="Only this submission (repeat for several)."
    ),
) -> None:
    """Write a static HTML leaderboard and report with plots (opens from file://, no server)."""
    from bioprior.registry.base.paths import default_db
    from bioprior.registry.report import ReportError, build_report

    try:
        site = build_report(db or default_db(), output, submission)
    except ReportError as exc:
        _fail(str(exc).removeprefix("error: "))
    n = sum(len(p) for p in site.plots.values())
    typer.echo(
        f"wrote {site.index} ({len(site.pages)} pages, {n} plots, {len(site.report.rows)} results)"
    )


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=file or sys.stderr)


def main() -> None:
    warnings.showwarning = _one_line_warning
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
