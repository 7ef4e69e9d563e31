"""The ``bioprior`` command line (typer + rich). Bad input exits 2 with one line per error."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import typer

from .entries import KINDS

app = typer.Typer(
    help="bioprior: score biologically constrained vision models against benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


@app.command()
def plugins(
    pattern: str | None = typer.Argument(None, help="Glob on plugin names, e.g. 'small_*'."),
    kind: str | None = typer.Option(None, "--kind", "-k", help=f"One of: {', '.join(KINDS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects."),
) -> None:
    """List registered plugins (and the ones that failed to load)."""
    from .plugins import get_registry

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


@app.command()
def schema(
    kind: str = typer.Argument(..., help=f"'submission' or a plugin kind ({', '.join(KINDS)})."),
    name: str | None = typer.Argument(None, help="Plugin name (not for 'submission')."),
) -> None:
    """Print the JSON Schema of a submission or of a plugin's parameters."""
    if kind == "submission":
        from .schemas import Submission

        typer.echo(json.dumps(Submission.model_json_schema(), indent=2))
        return
    if kind not in KINDS:
        _fail(f"KIND: must be 'submission' or one of {', '.join(KINDS)} (got {kind!r})")
    if not name:
        _fail(f"NAME: which {kind}? (see `bioprior plugins --kind {kind}`)")
    from .plugins import UnknownPluginError, get_registry

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
    """Check submission files; exit 0 when all are valid, else 2 with FILE:LINE: field: message."""
    from .plugins import get_registry
    from .submission import InvalidSubmission, load_submission

    errors: list[str] = []
    for file in files:
        try:
            loaded = load_submission(file, get_registry())
        except InvalidSubmission as exc:
            errors.extend(map(str, exc.errors))
            continue
        n = len(loaded.variants) * len(loaded.submission.seeds) * len(loaded.submission.benchmarks)
        typer.echo(f"{file}: ok ({len(loaded.variants)} variants, {n} jobs)")
    if errors:
        _fail(errors)


@app.command()
def score(
    files: list[Path] = typer.Argument(..., help="Submission YAML files."),
    db: Path | None = typer.Option(
        None, "--db", help="Results database (default $BIOPRIOR_HOME/results.sqlite)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan and print, run nothing."),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Where datasets live (sets BIOPRIOR_DATA)."
    ),
    batch: int | None = typer.Option(
        None,
        "--batch",
        min=1,
        help="Most trainings batched into one model (default: what fits in memory, when a "
        "calibration shows batching pays on this device; 1 trains one at a time).",
    ),
) -> None:
    """Train and evaluate submissions x benchmarks; resumes where a previous run stopped."""
    from .paths import default_db
    from .plugins import get_registry
    from .submission import InvalidSubmission

    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        _fail(f"--device: must be auto, cpu or cuda[:N] (got {device!r})")
    if data_root is not None:
        if not data_root.is_dir():
            _fail(f"--data-root: {data_root} is not a directory")
        os.environ["BIOPRIOR_DATA"] = str(data_root)
    from .scorer import PreflightError, Scorer
    from .store import ResultStore

    registry = get_registry()
    db_path = db or default_db()
    try:  # a dry run on a fresh home creates nothing
        store = ResultStore(":memory:" if dry_run and not db_path.exists() else db_path)
    except Exception as exc:  # noqa: BLE001 - sqlite errors on a bad path
        _fail(f"--db: cannot open {db_path}: {exc}")
    with store:
        from .progress import RichReporter

        reporter = RichReporter()
        scorer = Scorer(store, registry, device=device, reporter=reporter, max_batch=batch)
        try:
            loaded = scorer.load(files)
        except InvalidSubmission as exc:
            _fail(list(map(str, exc.errors)))
        paths = {s.submission.name: s.path for s in loaded}
        try:
            _, summary = scorer.plan(loaded)
            reporter.console.print(f"plan: {summary.describe()}", markup=False)
            estimates = scorer.estimate(summary) if summary.todo else {}
            if dry_run:
                _print_plan(reporter.console, summary, estimates)
                return
            report = scorer.run(summary, estimates)
        except PreflightError as exc:  # e.g. a dataset that is not under the data root
            _fail(f"{paths[exc.submission]}: {exc.field}: {exc.message}")
        except ValueError as exc:  # e.g. --device cuda without a GPU
            _fail(f"--device: {exc}" if "device" in str(exc) else str(exc))
        _print_estimate_vs_actual(reporter.console, report)
        rows = [r for r in store.rows() if r["submission"] in {s.submission.name for s in loaded}]
        _console().print(_results_table(rows))
        typer.echo(f"results in {db_path}")
        if report.failed:
            typer.echo(f"{len(report.failed)} job(s) failed", err=True)
            raise typer.Exit(1)


def _print_plan(console, summary, estimates) -> None:
    """The plan's steps (trainings, then evaluations), what is cached, estimates per step."""
    from rich.markup import escape

    from .estimate import human_flops, human_seconds

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
        console.print(f"estimate: ~{human_seconds(total_s)}, {human_flops(total_f)} in total")


def _print_estimate_vs_actual(console, report) -> None:
    from rich.markup import escape

    from .estimate import human_seconds

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


@app.command()
def results(
    submission: str | None = typer.Option(None, "--submission", "-s", help="Only this submission."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | json | csv."),
    db: Path | None = typer.Option(None, "--db", help="Results database."),
) -> None:
    """Show stored results."""
    from .paths import default_db
    from .store import ResultStore

    if fmt not in {"table", "json", "csv"}:
        _fail(f"--format: must be table, json or csv (got {fmt!r})")
    db_path = db or default_db()
    if not db_path.exists():
        _fail(f"--db: no results database at {db_path} (run `bioprior score` first)")
    with ResultStore(db_path) as store:
        rows = store.rows(submission=submission)
    if fmt == "json":
        typer.echo(json.dumps([_public(r) for r in rows], indent=2, default=str))
    elif fmt == "csv":
        typer.echo(_csv(rows), nl=False)
    else:
        _console().print(_results_table(rows))


PUBLIC = (
    "submission",
    "variant",
    "seed",
    "benchmark",
    "benchmark_version",
    "score",
    "metrics",
    "status",
    "error",
    "duration_s",
    "device",
    "plugin_versions",
    "weights_hash",
    "job_key",
    "finished_at",
)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in PUBLIC}


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


def _results_table(rows: list[dict[str, Any]]):
    from rich.table import Table

    table = Table(title=f"{len(rows)} results")
    for col in ("submission", "variant", "seed", "benchmark", "score", "status"):
        table.add_column(col, overflow="fold")
    table.add_column("metrics", no_wrap=True, min_width=30)
    for r in rows:
        variant = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["variant"].items()) or "-"
        numeric = {k: v for k, v in r["metrics"].items() if isinstance(v, (int, float))}
        shown = (
            r["error"]
            if r["status"] != "ok"
            else "\n".join(f"{k} {_fmt(v)}" for k, v in numeric.items())
        )
        table.add_row(
            r["submission"],
            variant,
            str(r["seed"]),
            r["benchmark"],
            _fmt(r["score"]),
            r["status"],
            shown,
        )
    return table


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
) -> None:
    """Write a grid of example stimuli per condition of a benchmark (what the model is tested on)."""
    import yaml
    from pydantic import ValidationError

    from .plugins import UnknownPluginError, get_registry

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
    from .data import DataUnavailable
    from .preview import preview_grid

    try:
        data = data_entry.build({})
        rows = preview_grid(
            bench, data, output, count=count, size=size, seed=seed, max_rows=max_rows
        )
    except DataUnavailable as exc:
        _fail(f"--dataset: {exc}")
    except NotImplementedError as exc:
        _fail(f"BENCHMARK: {exc}")
    typer.echo(f"wrote {output} ({rows} conditions x {count} images)")


@app.command()
def download(
    name: str = typer.Argument(..., help="cifar10 | cifar100 | mnist | fashion_mnist."),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Where to put it (sets BIOPRIOR_DATA)."
    ),
) -> None:
    """Download a torchvision dataset into the data root (needs network access)."""
    from .plugins import UnknownPluginError, get_registry

    if data_root is not None:
        os.environ["BIOPRIOR_DATA"] = str(data_root)
    try:
        entry = get_registry().get("dataset", name)
    except UnknownPluginError as exc:
        _fail(f"NAME: {exc}")
    if "download" not in entry.params.model_fields:
        _fail(f"NAME: {name} is not downloadable")
    data = entry.build({"download": True})
    typer.echo(f"{name}: {len(data.train_x)} training and {len(data.test_x)} test images ready")


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
