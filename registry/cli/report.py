"""``bioprior report``: the static HTML leaderboard and report (:mod:`bioprior.registry.report`)."""

from __future__ import annotations

from pathlib import Path

import typer

from bioprior.registry.base.paths import default_db
from bioprior.registry.cli.common import fail


def report(
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write the site into."),
    db: Path | None = typer.Option(None, "--db", help="Results database (read-only)."),
    submission: list[str] = typer.Option(
        [], "--submission", "-s", help="Only this submission (repeat for several)."
    ),
    paper: list[Path] = typer.Option(
        [],
        "--paper",
        help="A submission file whose `reference:` (the paper's published numbers) is shown "
        "beside the measured ones on its page, with a plot (repeat for several).",
    ),
) -> None:
    """Write a static HTML leaderboard and report with plots (opens from file://, no server)."""
    from bioprior.registry.report import ReportError, build_report  # lazy: matplotlib, jinja2

    try:
        site = build_report(db or default_db(), output, submission, references=paper)
    except ReportError as exc:
        fail(str(exc).removeprefix("error: "))
    n = sum(len(p) for p in site.plots.values())
    typer.echo(
        f"wrote {site.index} ({len(site.pages)} pages, {n} plots, {len(site.report.rows)} results)"
    )


def register(app: typer.Typer) -> None:
    app.command()(report)
