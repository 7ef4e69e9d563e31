"""``bioprior results``: stored results as a table, JSON or CSV (the table is also what
``bioprior score`` prints at the end), or in RobustBench's ``model_info`` format (printed, or one
file per model with ``-o DIR``); with ``--paper FILE``, a submission's published numbers (its
``reference:``) beside the measured ones instead."""

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
from bioprior.registry.submissions.loading import InvalidSubmission
from bioprior.registry.submissions.reference import Comparison, compare, read_reference
from bioprior.registry.submissions.schema import Submission

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
FORMATS = ("table", "json", "csv", "robustbench")


def results(
    submission: str | None = typer.Option(None, "--submission", "-s", help="Only this submission."),
    fmt: str = typer.Option(
        "table",
        "--format",
        "-f",
        help="table | json | csv | robustbench: RobustBench's model_info JSON, one per trained "
        "model (variant and seed) from its adversarial and corruption results; autoattack_acc "
        "only when the score attack is autoattack (no PGD number under that name), "
        "corruptions_acc only from all 15 corruptions x 5 severities, never corruptions_mce "
        "(bioprior's mCE is against its own baseline, not AlexNet); docs/report.md.",
    ),
    db: Path | None = typer.Option(None, "--db", help="Results database."),
    spec: bool = typer.Option(False, "--spec", help="JSON: include each job's full spec."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="--format robustbench: write one NAME.json per model into this folder instead of "
        "printing them (a file that exists with other content is refused).",
    ),
    force: bool = typer.Option(
        False, "--force", help="With --output: overwrite files that exist with other content."
    ),
    paper: list[Path] = typer.Option(
        [],
        "--paper",
        help="A submission file with a `reference:` (repeat for several): show the paper's "
        "numbers beside the measured ones (mean ± SEM over seeds, z, verdict) instead of the rows.",
    ),
) -> None:
    """Show stored results (the database is opened read-only: nothing is created or changed);
    --format robustbench -o DIR writes RobustBench's model_info files."""
    if fmt not in FORMATS:
        fail(f"--format: must be table, json, csv or robustbench (got {short(repr(fmt), 60)})")
    if output is not None and fmt != "robustbench":
        fail("--output: only with --format robustbench")
    if force and output is None:
        fail("--force: only with --output")
    if output is not None and output.exists() and not output.is_dir():
        fail(f"-o: {short(output, 200)} exists and is not a folder")
    db_path = db or default_db()
    if paper:
        if fmt == "robustbench":
            fail("--paper: not with --format robustbench")
        _paper(paper, submission, fmt, db_path)
        return
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
    if fmt == "robustbench":
        _robustbench(rows, output, force)
    elif fmt == "json":
        public = [_public(r, spec=spec) for r in rows]
        typer.echo(json.dumps(public, indent=2, default=str))
    elif fmt == "csv":
        typer.echo(_csv(rows), nl=False)
    else:
        print_results(console(), rows)


def _robustbench(rows: list[dict[str, Any]], output: Path | None, force: bool) -> None:
    """RobustBench's model_info documents: printed as ``{file name: document}``, or written."""
    from bioprior.registry.report import robustbench  # lazy: the report package loads matplotlib

    infos = robustbench.model_infos(rows)
    if output is None:
        typer.echo(json.dumps(infos, indent=2))
        return
    if not infos:
        typer.echo(
            "nothing to write: no adversarial result, nor a corruption result over "
            "RobustBench's 15 corruptions x 5 severities",
            err=True,
        )
        return
    try:
        written, unchanged = robustbench.write(infos, output, force=force)
    except robustbench.ExportError as exc:
        fail(f"-o: {short(' '.join(str(exc).splitlines()), 300)}")
    typer.echo(
        f"wrote {written} RobustBench model_info files to {output}"
        + (f" ({unchanged} unchanged)" if unchanged else "")
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
    """Every cell is text: a name, value or error that looks like rich markup is shown as is."""
    from rich.table import Table
    from rich.text import Text

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
        cells = (
            short(r["submission"], 120),  # whole in --format json
            short(variant, 200),
            str(r["seed"]),
            r["benchmark"],
            _fmt(r["score"]),
            f"{r['status']} ({r['error_class']})" if r.get("error_class") else r["status"],
            shown,
        )
        table.add_row(*(Text(str(c)) for c in cells))
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


# -- --paper: the paper beside the measurement ------------------------------------------------------
PAPER_CSV = (
    "submission",
    "label",
    "benchmark",
    "metric",
    "scale",
    "paper_value",
    "paper_sem",
    "paper_n",
    "measured_mean",
    "measured_sem",
    "seeds_done",
    "seeds",
    "delta",
    "z",
    "verdict",
    "note",
)


def _paper(files: list[Path], submission: str | None, fmt: str, db_path: Path) -> None:
    subs: list[Submission] = []
    for file in files:
        try:
            sub = read_reference(file)
        except InvalidSubmission as exc:
            fail([str(e) for e in exc.errors])
        if sub.reference is None:
            fail(f"--paper: {short(file, 150)} has no `reference:` (docs/submissions.md)")
        if submission is None or sub.name == submission:
            subs.append(sub)
    if not subs:
        fail(f"--submission: none of the --paper files is {short(repr(submission), 80)}")
    try:
        with ResultStore.open_readonly(db_path) as store:
            found = [compare(s, store.rows(submission=s.name)) for s in subs]
    except StoreError as exc:
        fail(f"--db: {short(exc, 250)}")
    except sqlite3.Error as exc:
        fail(f"--db: cannot read {short(db_path, 150)}: {short(exc, 100)}")
    flat = [c for group in found for c in group]
    if fmt == "json":
        typer.echo(json.dumps([c.as_dict() for c in flat], indent=2, default=str))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(PAPER_CSV)
        for c in flat:
            d = c.as_dict()
            p, m = d["paper"], d["measured"]
            writer.writerow(
                [d["submission"], d["label"], d["benchmark"], d["metric"], d["scale"]]
                + [p["value"], p["sem"], p["n"], m["mean"], m["sem"], m["seeds_done"], m["seeds"]]
                + [d["delta"], d["z"], d["verdict"], d["note"]]
            )
        typer.echo(buf.getvalue(), nl=False)
    else:
        out = console()
        for group in found:
            out.print(paper_table(group))
        out.print(
            "z = (measured - paper) / sqrt(SEM_measured² + SEM_paper²); |z| <= 2 agrees, "
            "<= 3 tension, > 3 disagrees (docs/submissions.md)",
            markup=False,
            highlight=False,
        )


VERDICT_STYLE = {"agrees": "green", "tension": "yellow", "disagrees": "red"}


def paper_table(comparisons: list[Comparison]):
    """One submission's reference as a rich table; every cell is text (no markup)."""
    from rich.table import Table
    from rich.text import Text

    first = comparisons[0] if comparisons else None
    title = f"{first.submission}: {first.source}" if first else "paper vs measured"
    table = Table(title=Text(title))
    table.add_column("variant", overflow="fold")
    table.add_column("metric", overflow="fold")
    table.add_column("paper (± SEM, n)", no_wrap=True)
    table.add_column("measured (± SEM, seeds)", no_wrap=True)
    table.add_column("Δ", no_wrap=True, justify="right")
    table.add_column("z", no_wrap=True, justify="right")
    table.add_column("verdict", overflow="fold")
    for c in comparisons:
        cells = c.cells
        style = VERDICT_STYLE.get(c.verdict, "")
        table.add_row(
            *(Text(cells[k]) for k in ("variant", "metric", "paper", "measured", "delta", "z")),
            Text(cells["verdict"], style=style),
        )
    return table


def register(app: typer.Typer) -> None:
    app.command()(results)
