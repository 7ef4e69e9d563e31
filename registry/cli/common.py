"""What every command of the ``bioprior`` CLI shares: bad input as one line per error (exit 2),
the console tables print to, and values echoed back truncated."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console


def fail(lines: list[str] | str, code: int = 2) -> NoReturn:
    """Each line as ``error: LINE`` on stderr (a line that starts with a YAML file's name as
    it is), then exit ``code``."""
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(
            f"error: {line}" if not line.split(":", 1)[0].endswith((".yaml", ".yml")) else line,
            err=True,
        )
    raise typer.Exit(code)


def console() -> Console:
    """The terminal's console, or 140 columns wide where the output is not a terminal."""
    from rich.console import Console  # rich's console loads on first use, not at start

    found = Console()
    return found if found.is_terminal else Console(width=140)


def short(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
