"""Plain ``--help`` for the typer app: ``FILE...`` instead of ``{files}...`` / ``<list[Path]>``,
bare flags instead of ``--dry-run <bool>``, and value options with a metavar (``PATH``, ``N``)."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

_METAVARS = {"str": "TEXT", "int": "N", "float": "X", "Path": "PATH"}
_ARGUMENT_NAMES = {"files": "FILE"}


def plain(param: Any) -> None:
    """Give one typer parameter a plain help rendering (in place)."""
    if isinstance(param, TyperArgument):
        name = param.metavar or _ARGUMENT_NAMES.get(param.name, param.name.upper())
        label = name + ("..." if param.nargs != 1 and not name.endswith("...") else "")
        usage = label if param.required else f"[{label}]"
        param.metavar = label
        param.display_type_rich = lambda ctx: None
        param._usage_display_name = lambda: usage
    elif getattr(param, "is_flag", False):
        param.metavar = ""
    elif param.metavar is None:
        bare = param.bare_type()
        if bare.startswith("list[") and bare.endswith("]"):  # a repeatable option: one value
            bare = bare[5:-1]
        param.metavar = _METAVARS.get(bare, bare.upper())


class _PlainHelp:
    """Plain help for a click command or group: every parameter, and the help option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            plain(param)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            plain(option)
        return option


class PlainHelpCommand(_PlainHelp, TyperCommand):
    pass


class PlainHelpGroup(_PlainHelp, TyperGroup):
    pass


class PlainHelpTyper(typer.Typer):
    """A Typer whose group and commands all render plain help (``cls`` still overrides)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cls", PlainHelpGroup)
        super().__init__(*args, **kwargs)

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or PlainHelpCommand, **kwargs)
