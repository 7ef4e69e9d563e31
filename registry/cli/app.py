"""The ``bioprior`` command line (typer + rich): the app, its global options and ``main`` (the
console script). The commands live in modules by group, each registering itself here:
``plugins`` (plugins, plugins check, new-plugin, schema), ``score`` (validate, score),
``results``, ``data`` (preview, download) and ``report``. Bad input exits 2 with one line per
error (:func:`.common.fail`)."""

from __future__ import annotations

import os
import sys
import warnings

import typer

from bioprior.registry.base.stops import Stopped
from bioprior.registry.cli import data, plugins, report, results, score
from bioprior.registry.cli.plain_help import PlainHelpTyper
from bioprior.registry.hooks.loading import SKIP_VARIABLE, set_registry

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
    skip_plugin: list[str] = typer.Option(
        [],
        "--skip-plugin",
        help="Do not load this third-party plugin (entry point or distribution name; repeat "
        "for several); as BIOPRIOR_SKIP_PLUGINS=a,b. BIOPRIOR_LOAD_PLUGINS=a,b loads only those.",
    ),
) -> None:
    """bioprior: score biologically constrained vision models against benchmarks."""
    if skip_plugin:  # in the environment: child processes and Ray workers skip them too
        before = os.environ.get(SKIP_VARIABLE, "")
        os.environ[SKIP_VARIABLE] = ",".join(filter(None, [before, *skip_plugin]))
        set_registry(None)
    if verbose:
        from bioprior.registry.base.torchvision_compat import set_verbose  # lazy: torchvision

        set_verbose(True)


for _group in (plugins, score, results, data, report):  # the order of `bioprior --help`
    _group.register(app)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=file or sys.stderr)


#: deprecations aimed at plugin authors (an old import path, the first constraint contract): shown
#: on the console, which Python's default filters would hide outside ``__main__``
PLUGIN_DEPRECATIONS = r".*bioprior\.plugin"


def main() -> None:
    warnings.showwarning = _one_line_warning
    warnings.filterwarnings("default", message=PLUGIN_DEPRECATIONS, category=DeprecationWarning)
    try:
        app()
    except Stopped as exc:  # SIGTERM (base/stops.py) outside a command that says where it was
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
