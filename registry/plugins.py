"""Plugin loading: entry points of group ``bioprior`` -> pluggy -> a queryable :class:`Registry`.

Each entry point is loaded on its own. One that fails to import, misspells a hook, registers a
duplicate name or an invalid schema is recorded as a :class:`PluginFailure` and the rest keeps
working; ``BIOPRIOR_STRICT_PLUGINS=1`` re-raises instead.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .entries import KINDS, EntryError, PluginEntry, load_attribute


@dataclass(frozen=True)
class PluginFailure:
    """A plugin (or one of its entries) that could not be loaded."""

    provider: str
    provider_version: str
    entry_point: str
    error: str
    name: str | None = None
    kind: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name or self.entry_point,
            "kind": self.kind,
            "provider": self.provider,
            "provider_version": self.provider_version,
            "version": None,
            "error": self.error,
        }


class UnknownPluginError(LookupError):
    """A name that no plugin registered; ``suggestions`` lists the close matches."""

    def __init__(self, kind: str, name: str, suggestions: list[str]):
        self.kind, self.name, self.suggestions = kind, name, suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown {kind} {name!r}{hint}")


def strict_plugins() -> bool:
    return os.environ.get("BIOPRIOR_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


class Registry:
    """All registered entries, by kind and name; pleasant to query (``list("model", "small_*")``)."""

    def __init__(self, strict: bool | None = None) -> None:
        self.strict = strict_plugins() if strict is None else strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._entries: dict[tuple[str, str], PluginEntry] = {}
        self._members: dict[tuple[str, str], PluginEntry] = {}
        self.failures: list[PluginFailure] = []

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(self, eps: Iterable[EntryPoint] | None = None) -> Registry:
        if eps is None:
            eps = entry_points(group=hookspecs.ENTRY_POINT_GROUP)
        for ep in sorted(eps, key=lambda e: (e.dist.name if e.dist else "", e.name)):
            dist = ep.dist.name if ep.dist else "unknown"
            version = ep.dist.version if ep.dist else ""
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import error is recorded
                self._fail(dist, version, ep.name, f"import failed: {_one_line(exc)}", exc)
                continue
            self.add_plugin(module, provider=dist, provider_version=version, name=ep.name)
        return self

    def add_plugin(
        self, plugin: ModuleType | object, provider: str, provider_version: str = "", name: str = ""
    ) -> None:
        """Register one plugin object (a module with ``@hookimpl`` functions) and collect its entries."""
        ep_name = name or getattr(plugin, "__name__", repr(plugin))
        try:
            self.pm.register(plugin, name=f"{provider}:{ep_name}")
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._fail(provider, provider_version, ep_name, f"invalid hooks: {_one_line(exc)}", exc)
            return
        for hook_name, kind in hookspecs.HOOK_KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                pending: list[PluginEntry] = []
                register = self._make_register(kind, pending, provider, provider_version, ep_name)
                try:
                    impl.function(register=register)
                except Exception as exc:  # noqa: BLE001
                    self._fail(
                        provider,
                        provider_version,
                        ep_name,
                        f"{hook_name} raised: {_one_line(exc)}",
                        exc,
                    )
                    continue
                for entry in pending:
                    self._commit(entry, ep_name)

    def _make_register(
        self, kind: str, pending: list[PluginEntry], provider: str, version: str, ep_name: str
    ):
        def register(entry: PluginEntry | None = None, /, **fields: Any) -> None:
            if entry is None:
                fields.setdefault("kind", kind)
                entry = PluginEntry(**fields)
            entry = entry.stamped(provider, version)
            try:
                if entry.kind != kind:
                    raise EntryError(
                        f"{entry.name}: a {entry.kind} registered through the {kind} hook"
                    )
                entry.validate()
            except EntryError as exc:
                self._fail(provider, version, ep_name, str(exc), exc, entry.name, entry.kind)
                return
            pending.append(entry)

        return register

    def _commit(self, entry: PluginEntry, ep_name: str) -> None:
        key = (entry.kind, entry.name)
        if key in self._entries:
            first = self._entries[key]
            msg = (
                f"duplicate {entry.kind} {entry.name!r}: provided by {first.provider} "
                f"{first.provider_version} and {entry.provider} {entry.provider_version}; "
                f"keeping {first.provider}'s"
            )
            self._fail(
                entry.provider,
                entry.provider_version,
                ep_name,
                msg,
                EntryError(msg),
                entry.name,
                entry.kind,
            )
            return
        self._entries[key] = entry

    def _fail(
        self,
        provider: str,
        version: str,
        ep_name: str,
        message: str,
        exc: BaseException,
        name: str | None = None,
        kind: str | None = None,
    ) -> None:
        if self.strict:
            raise exc
        self.failures.append(PluginFailure(provider, version, ep_name, message, name, kind))

    # -- queries ---------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> PluginEntry:
        """The entry ``name`` of ``kind``; ``family:member`` names (e.g. ``timm:resnet18``) are
        resolved by the family entry ``family`` (see :meth:`member`)."""
        entry = self._entries.get((kind, name))
        if entry is not None:
            return entry
        if ":" in name:
            return self.member(kind, name)
        raise UnknownPluginError(kind, name, self.suggest(kind, name))

    def member(self, kind: str, name: str) -> PluginEntry:
        """Resolve ``family:member`` through a family entry: one registered with
        ``extra={"family": "module:resolve", "family_members": "module:members"}``, where
        ``resolve(member, family_entry)`` returns the member's :class:`PluginEntry` (raising
        :class:`UnknownPluginError` for an unknown member) and ``members()`` lists the names."""
        key = (kind, name)
        if key in self._members:
            return self._members[key]
        prefix, _, member = name.partition(":")
        family = self._entries.get((kind, prefix))
        if family is None or "family" not in family.extra:
            raise UnknownPluginError(kind, name, self.suggest(kind, name))
        resolve = load_attribute(family.extra["family"])
        entry = resolve(member, family).stamped(family.provider, family.provider_version)
        entry.validate()
        self._members[key] = entry
        return entry

    def has(self, kind: str, name: str) -> bool:
        try:
            self.get(kind, name)
        except UnknownPluginError:
            return False
        return True

    def suggest(self, kind: str, name: str) -> list[str]:
        return difflib.get_close_matches(name, self.names(kind), n=3, cutoff=0.5)

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self._entries if k == kind)

    def list(self, kind: str | None = None, pattern: str | None = None) -> list[PluginEntry]:
        """Entries of ``kind`` (all kinds if None) whose name matches the glob ``pattern``."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        found = [
            e
            for (k, n), e in sorted(self._entries.items())
            if (kind is None or k == kind) and (pattern is None or fnmatch.fnmatch(n, pattern))
        ]
        if pattern is not None and ":" in pattern:  # family members, e.g. "timm:resnet*"
            prefix, _, member_pattern = pattern.partition(":")
            for (k, n), family in sorted(self._entries.items()):
                if n == prefix and (kind is None or k == kind) and "family_members" in family.extra:
                    members = load_attribute(family.extra["family_members"])()
                    found += [
                        self.member(k, f"{n}:{m}")
                        for m in members
                        if fnmatch.fnmatch(m, member_pattern)
                    ]
        return found

    def extended(self, *entries: PluginEntry) -> Registry:
        """A copy of this registry with extra entries (e.g. an in-memory model); self is unchanged."""
        copy = Registry(strict=self.strict)  # its own plugin manager and member cache
        for name, plugin in self.pm.list_name_plugin():
            copy.pm.register(plugin, name=name)
        copy._entries = {**self._entries, **{(e.kind, e.name): e for e in entries}}
        copy._members = {k: e for k, e in self._members.items() if k not in copy._entries}
        copy.failures = list(self.failures)
        return copy

    def __len__(self) -> int:
        return len(self._entries)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not text.startswith(type(exc).__name__) else text


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded from installed entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = Registry().load_entry_points()
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests, embedding applications)."""
    global _REGISTRY
    _REGISTRY = registry


__all__ = ["PluginFailure", "Registry", "UnknownPluginError", "get_registry", "set_registry"]
