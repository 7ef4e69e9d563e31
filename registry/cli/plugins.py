"""``bioprior plugins [PATTERN]`` (list), ``plugins check`` (the conformance kit),
``new-plugin`` (a package from the template) and ``schema`` (JSON Schemas)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.core import TyperGroup

from bioprior.registry.cli.common import console, fail
from bioprior.registry.hooks.entries import KINDS
from bioprior.registry.hooks.loading import (
    BUILTIN_DISTRIBUTION,
    UnknownPluginError,
    get_registry,
    normalize_distribution,
)
from bioprior.registry.submissions.schema import Submission
from bioprior.testing import checks_for, run_checks
from bioprior.testing.builtin import config_for
from bioprior.testing.scaffold import ScaffoldError, render_plugin


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


@plugins_app.command("list")
def plugins(
    pattern: str | None = typer.Argument(None, help="Glob on plugin names, e.g. 'small_*'."),
    kind: str | None = typer.Option(None, "--kind", "-k", help=f"One of: {', '.join(KINDS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects."),
) -> None:
    """List registered plugins (and the ones that failed to load)."""
    if kind is not None and kind not in KINDS:
        fail(f"--kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    registry = get_registry()
    entries = registry.list(kind, pattern)
    failures = [f for f in registry.failures if kind is None or f.kind in (None, kind)]
    if as_json:
        typer.echo(
            json.dumps([e.summary() for e in entries] + [f.summary() for f in failures], indent=2)
        )
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title="bioprior plugins")
    for col in ("kind", "name", "provider", "version", "parameters"):
        table.add_column(col)
    for e in entries:
        params = ", ".join(f"{n}={p['default']!r}" for n, p in e.summary()["params"].items())
        cells = (e.kind, e.name, f"{e.provider} {e.provider_version}", e.version, params)
        table.add_row(*(Text(str(c)) for c in cells))
    out = console()
    out.print(table)
    for f in failures:  # what a plugin said is text, never markup
        line = Text("failed", style="red")
        line.append(f" {f.provider} {f.provider_version} ({f.entry_point}): {f.error}")
        out.print(line)
    if registry.skipped:
        out.print(
            f"skipped: {', '.join(registry.skipped)} (--skip-plugin, BIOPRIOR_SKIP_PLUGINS, "
            "BIOPRIOR_LOAD_PLUGINS)",
            markup=False,
            highlight=False,
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
    registry = get_registry()
    installed = sorted({normalize_distribution(e.provider) for e in registry.list()})
    if not dists:
        dists = [d for d in installed if d != BUILTIN_DISTRIBUTION]
        if not dists:
            fail(
                "DIST: no third-party plugin distributions are installed; name one "
                f"(installed: {', '.join(installed)})"
            )
    unknown = [d for d in dists if normalize_distribution(d) not in installed]
    if unknown:
        fail(
            f"DIST: {', '.join(unknown)} registers no entries (installed: {', '.join(installed)}); "
            "see `bioprior plugins` for ones that failed to load"
        )
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
            fail(f"--name: {exc}")
    results = run_checks(checks, include_slow=slow)
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        _print_checks(dists, results)
    if failed:
        raise typer.Exit(1)


def _print_checks(dists: list[str], results: list) -> None:
    from rich.table import Table
    from rich.text import Text

    colour = {"ok": "green", "failed": "red", "expected failure": "yellow"}
    table = Table(title=f"bioprior plugins check {' '.join(dists)}")
    for col in ("entry", "check", "status", "message"):
        table.add_column(col, overflow="fold")
    for r in results:
        style = colour.get(r.status, "dim")
        table.add_row(
            Text(str(r.entry)),
            Text(str(r.check)),
            Text(r.status, style=style),
            Text(str(r.message)),
        )
    out = console()
    out.print(table)
    counts = {
        s: sum(r.status == s for r in results) for s in dict.fromkeys(r.status for r in results)
    }
    out.print(", ".join(f"{n} {s}" for s, n in counts.items()), markup=False, highlight=False)


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
    try:
        root = render_plugin(name, kind, output)
    except ScaffoldError as exc:
        fail(str(exc))
    typer.echo(f"created {root}")
    typer.echo(f"next: cd {root} && pip install -e '.[test]' && pytest")


def schema(
    kind: str = typer.Argument(..., help=f"'submission' or a plugin kind ({', '.join(KINDS)})."),
    name: str | None = typer.Argument(None, help="Plugin name (not for 'submission')."),
) -> None:
    """Print the JSON Schema of a submission or of a plugin's parameters."""
    if kind == "submission":
        typer.echo(json.dumps(Submission.model_json_schema(), indent=2))
        return
    if kind not in KINDS:
        fail(f"KIND: must be 'submission' or one of {', '.join(KINDS)} (got {kind!r})")
    if not name:
        fail(f"NAME: which {kind}? (see `bioprior plugins --kind {kind}`)")
    try:
        entry = get_registry().get(kind, name)
    except UnknownPluginError as exc:
        fail(f"NAME: {exc}")
    out = entry.params.model_json_schema()
    out["title"] = f"{kind} {entry.name} (version {entry.version})"
    out["description"] = "\n".join(x for x in (entry.description, entry.citation) if x)
    typer.echo(json.dumps(out, indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(plugins_app, name="plugins")
    app.command("new-plugin")(new_plugin)
    app.command()(schema)
