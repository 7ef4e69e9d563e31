"""``bioprior results``: stored results as a table, JSON or CSV (the table is also what
``bioprior score`` prints at the end)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import typer

from bioprior.registry.base.paths import default_db
from bioprior.registry.cli.common import console, fail, short
from bioprior.registry.hooks.loading import UnknownPluginError, get_registry
from bioprior.registry.store.results import ResultStore, StoreError

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
RUNNING = "_running"


def results(
    submission: str | None = typer.Option(None, "--submission", "-s", help="Only this submission."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | json | csv."),
    db: Path | None = typer.Option(None, "--db", help="Results database."),
    spec: bool = typer.Option(False, "--spec", help="JSON: include each job's full spec."),
) -> None:
    """Show stored results (the database is opened read-only: nothing is created or changed)."""
    if fmt not in {"table", "json", "csv"}:
        fail(f"--format: must be table, json or csv (got {short(repr(fmt), 60)})")
    db_path = db or default_db()
    try:
        with ResultStore.open_readonly(db_path) as store:
            rows = store.rows(submission=submission)
    except StoreError as exc:
        fail(f"--db: {short(exc, 250)}")
    except sqlite3.Error as exc:
        fail(f"--db: cannot read {short(db_path, 150)}: {short(exc, 100)}")
    if submission and not rows:
        with ResultStore.open_readonly(db_path) as store:
            known = sorted({r["submission"] for r in store.rows()})
        fail(
            f"--submission: no results for {short(repr(submission), 80)} in "
            f"{short(db_path, 150)}; "
            + (
                f"stored: {short(', '.join(known), 200)}"
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
        print_results(console(), rows)


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


def print_results(out, rows: list[dict[str, Any]]) -> None:
    """The results table, then what each benchmark's score means."""
    out.print(_results_table(rows))
    for line in score_legend(rows):
        out.print(line, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(results)
