"""Plugin loading: entry points of group ``bioprior`` -> pluggy -> a queryable :class:`Registry`.

Each entry point is loaded on its own. One that fails to import, misspells a hook, registers a
duplicate name or an invalid schema is recorded as a :class:`PluginFailure` and the rest keeps
working; ``BIOPRIOR_STRICT_PLUGINS=1`` re-raises instead.

Precedence never depends on distribution names or install order: bioprior's own entries always
win over a third party's of the same kind and name; when two third-party distributions provide
one name, neither is registered (the failure names both) until the user uninstalls one or picks
one with ``BIOPRIOR_PREFER="name=distribution"`` (``kind:name=distribution`` when a name exists
in two kinds; several picks separated by commas). The rule is :mod:`.precedence` (a pure
function); the messages and the bookkeeping are here.

A plugin module may do anything while it is imported. Whatever it raises, ``SystemExit`` included
(``KeyboardInterrupt`` aside), is a :class:`PluginFailure` that says how to skip it; an import
that takes more than :data:`WATCHDOG_S` seconds is named on stderr while it runs; a crash (a
segfault in an extension module) dumps the Python stack with :mod:`faulthandler`, whose innermost
bioprior frame is named ``importing plugin NAME (MODULE)``. A plugin that ends the process
(``os._exit``) cannot be caught: skip it. The user names the plugins to load or skip as llm
does: ``BIOPRIOR_LOAD_PLUGINS=a,b`` loads only those (set but empty: none),
``BIOPRIOR_SKIP_PLUGINS=a,b`` skips those (``bioprior --skip-plugin NAME``), each name an entry
point name or a distribution name. bioprior's own entries are always loaded: they are the
reference every third-party plugin is compared with, and every command needs them.
"""

from __future__ import annotations

import difflib
import faulthandler
import fnmatch
import os
import re
import sys
import threading
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from bioprior.registry.hooks import precedence
from bioprior.registry.hooks import specs as hookspecs
from bioprior.registry.hooks.entries import KINDS, EntryError, PluginEntry, load_attribute
from bioprior.registry.hooks.precedence import (
    BUILTIN_DISTRIBUTION,
    Decision,
    normalize_distribution,
)


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


class PluginConflictError(UnknownPluginError):
    """A name that two third-party distributions provide, so neither is registered."""

    def __init__(self, kind: str, name: str, message: str):
        LookupError.__init__(self, message)
        self.kind, self.name, self.suggestions = kind, name, []


@dataclass(frozen=True)
class EntryOrigin:
    """Where a registered entry came from: its distribution, entry point and plugin module."""

    provider: str
    provider_version: str
    entry_point: str
    module: str


def strict_plugins() -> bool:
    return os.environ.get("BIOPRIOR_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


#: seconds a plugin import may take before stderr names it (it keeps running)
WATCHDOG_S = 5.0
LOAD_VARIABLE = "BIOPRIOR_LOAD_PLUGINS"
SKIP_VARIABLE = "BIOPRIOR_SKIP_PLUGINS"


def _names(variable: str) -> set[str] | None:
    """The plugin names in an environment variable (comma- or space-separated), normalized;
    None when it is not set."""
    text = os.environ.get(variable)
    if text is None:
        return None
    return {normalize_distribution(n) for n in re.split(r"[,\s]+", text.strip()) if n}


def selected(ep_name: str, dist: str) -> bool:
    """Whether the user's ``BIOPRIOR_LOAD_PLUGINS`` / ``BIOPRIOR_SKIP_PLUGINS`` let a third-party
    entry point load (named by its entry point name or its distribution)."""
    names = {normalize_distribution(ep_name), normalize_distribution(dist)}
    load, skip = _names(LOAD_VARIABLE), _names(SKIP_VARIABLE)
    if load is not None and not names & load:
        return False
    return not (skip and names & skip)


def skip_hint(ep_name: str) -> str:
    return f"skip it with `bioprior --skip-plugin {ep_name}` or {SKIP_VARIABLE}={ep_name}"


def _import(ep: EntryPoint) -> Any:
    return ep.load()


def _load_watched(ep: EntryPoint) -> Any:
    """``ep.load()`` through a frame named after the plugin (what faulthandler prints when the
    import crashes the process), with a watchdog that names it on stderr when it is slow."""
    label = f"importing plugin {ep.name} ({ep.value})"
    code = _import.__code__.replace(co_name=label, co_qualname=label)
    named = types.FunctionType(code, _import.__globals__, label)

    def still() -> None:
        print(
            f"bioprior: still importing plugin {ep.name} ({ep.value}) after {WATCHDOG_S:g} s; "
            f"{skip_hint(ep.name)}",
            file=sys.stderr,
            flush=True,
        )

    watchdog = threading.Timer(WATCHDOG_S, still)
    watchdog.daemon = True
    enabled = faulthandler.is_enabled()
    if not enabled:
        try:
            faulthandler.enable(file=sys.__stderr__ or sys.stderr)
        except (AttributeError, ValueError, OSError):  # no usable stderr (e.g. pythonw)
            pass
    watchdog.start()
    try:
        return named(ep)
    finally:
        watchdog.cancel()
        if not enabled:
            faulthandler.disable()


def preferences(text: str | None = None) -> dict[str, str]:
    """``BIOPRIOR_PREFER`` parsed: ``"a=dist-x, model:b=dist-y"`` -> {"a": "dist-x", ...}."""
    text = os.environ.get("BIOPRIOR_PREFER", "") if text is None else text
    picks: dict[str, str] = {}
    for item in re.split(r"[,;\s]+", text.strip()):
        if not item:
            continue
        name, sep, dist = item.partition("=")
        if not sep or not name or not dist:
            raise ValueError(f"BIOPRIOR_PREFER: expected NAME=DISTRIBUTION, got {item!r}")
        picks[name] = normalize_distribution(dist)
    return picks


class Registry:
    """All registered entries, by kind and name; pleasant to query (``list("model", "small_*")``)."""

    def __init__(self, strict: bool | None = None, prefer: Mapping[str, str] | None = None) -> None:
        self.strict = strict_plugins() if strict is None else strict
        self.failures: list[PluginFailure] = []
        #: entry points the user skipped (BIOPRIOR_LOAD_PLUGINS / BIOPRIOR_SKIP_PLUGINS)
        self.skipped: list[str] = []
        try:
            self.prefer = (
                preferences()
                if prefer is None
                else {k: normalize_distribution(v) for k, v in prefer.items()}
            )
        except ValueError as exc:  # a malformed BIOPRIOR_PREFER is reported, not a crash
            if self.strict:
                raise
            self.prefer = {}
            self.failures.append(PluginFailure("BIOPRIOR_PREFER", "", "BIOPRIOR_PREFER", str(exc)))
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._entries: dict[tuple[str, str], PluginEntry] = {}
        self._members: dict[tuple[str, str], PluginEntry] = {}
        # every provider of each (kind, name), the one chosen and the failures that choice made
        self._candidates: dict[tuple[str, str], list[tuple[PluginEntry, EntryOrigin]]] = {}
        self._origins: dict[tuple[str, str], EntryOrigin] = {}
        self._resolution_failures: dict[tuple[str, str], list[PluginFailure]] = {}

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(self, eps: Iterable[EntryPoint] | None = None) -> Registry:
        if eps is None:
            eps = entry_points(group=hookspecs.ENTRY_POINT_GROUP)

        def order(ep: EntryPoint) -> tuple[bool, str, str]:  # bioprior's own first
            dist = normalize_distribution(ep.dist.name) if ep.dist else ""
            return (dist != BUILTIN_DISTRIBUTION, dist, ep.name)

        for ep in sorted(eps, key=order):
            dist = ep.dist.name if ep.dist else "unknown"
            version = ep.dist.version if ep.dist else ""
            if normalize_distribution(dist) != BUILTIN_DISTRIBUTION and not selected(ep.name, dist):
                self.skipped.append(ep.name)
                continue
            try:
                module = _load_watched(ep)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - SystemExit too: recorded, not obeyed
                message = f"import failed: {_one_line(exc)}; {skip_hint(ep.name)}"
                self._fail(dist, version, ep.name, message, exc)
                continue
            self.add_plugin(module, provider=dist, provider_version=version, name=ep.name)
        return self

    def add_plugin(
        self, plugin: ModuleType | object, provider: str, provider_version: str = "", name: str = ""
    ) -> None:
        """Register one plugin object (a module with ``@hookimpl`` functions) and collect its entries."""
        ep_name = name or getattr(plugin, "__name__", repr(plugin))
        module = getattr(plugin, "__name__", "") if isinstance(plugin, ModuleType) else ""
        origin = EntryOrigin(provider, provider_version, ep_name, module)
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
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # noqa: BLE001 - SystemExit too
                    self._fail(
                        provider,
                        provider_version,
                        ep_name,
                        f"{hook_name} raised: {_one_line(exc)}",
                        exc,
                    )
                    continue
                for entry in pending:
                    self._commit(entry, origin)

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

    def _commit(self, entry: PluginEntry, origin: EntryOrigin) -> None:
        key = (entry.kind, entry.name)
        self._candidates.setdefault(key, []).append((entry, origin))
        self._resolve(key)

    def _resolve(self, key: tuple[str, str]) -> None:
        """Choose the provider of ``key`` among all candidates so far (the rule, order-independent,
        is :mod:`.precedence`'s) and record what each candidate left out was told."""
        for old in self._resolution_failures.pop(key, []):
            if old in self.failures:
                self.failures.remove(old)
        kind, name = key
        candidates = self._candidates[key]
        by_dist: dict[str, list[tuple[PluginEntry, EntryOrigin]]] = {}
        for entry, origin in candidates:
            by_dist.setdefault(normalize_distribution(entry.provider), []).append((entry, origin))
        label = {
            d: f"{c[0][0].provider} {c[0][0].provider_version}".strip() for d, c in by_dist.items()
        }
        dists = list(by_dist)
        won = precedence.winner(kind, name, dists, self.prefer)
        winner = None if won is None else by_dist[won][0]
        failures: list[tuple[PluginEntry, EntryOrigin, str]] = []
        if winner is None:
            decision = precedence.decide(kind, name, dists[0], dists[1], self.prefer)
            first = candidates[0]
            failures.append((*first, _conflict_message(kind, name, decision, by_dist, label)))
        else:
            for dist, cands in by_dist.items():
                if dist != won:
                    decision = precedence.decide(kind, name, won, dist, self.prefer)
                    message = _lost_message(kind, name, decision, label[dist], cands[0], winner)
                    failures.append((*cands[0], message))
        for dist, cands in by_dist.items():  # one distribution registering a name twice
            for entry, origin in cands[1:]:
                failures.append(
                    (
                        entry,
                        origin,
                        (
                            f"duplicate {kind} {name!r}: registered twice by {label[dist]}; "
                            "keeping the first"
                        ),
                    )
                )
        if winner is None:
            self._entries.pop(key, None)
            self._origins.pop(key, None)
        else:
            self._entries[key], self._origins[key] = winner
        recorded: list[PluginFailure] = []
        for entry, origin, message in failures:
            provider = (
                entry.provider
                if winner is not None
                else ", ".join(c[0][0].provider for c in by_dist.values())
            )
            failure = PluginFailure(
                provider,
                entry.provider_version if winner is not None else "",
                origin.entry_point,
                message,
                name,
                kind,
            )
            recorded.append(failure)
            self.failures.append(failure)
        self._resolution_failures[key] = recorded
        if self.strict and recorded:
            raise EntryError(recorded[0].error)

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
            if isinstance(exc, Exception):
                raise exc
            raise RuntimeError(f"plugin {ep_name}: {message}") from exc  # not an exit
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
        for failure in self._resolution_failures.get((kind, name), []):
            if "neither is registered" in failure.error:
                raise PluginConflictError(kind, name, failure.error)
        raise UnknownPluginError(kind, name, self.suggest(kind, name))

    def origin(self, kind: str, name: str) -> EntryOrigin | None:
        """The distribution, entry point and plugin module of a registered entry (None for
        entries not loaded through a plugin, e.g. in-memory ones)."""
        return self._origins.get((kind, name))

    def origins(self) -> dict[tuple[str, str], EntryOrigin]:
        """Every registered entry's origin, by (kind, name)."""
        return dict(self._origins)

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


Candidate = tuple[PluginEntry, EntryOrigin]


def _lost_message(
    kind: str, name: str, decision: Decision, label: str, loser: Candidate, winner: Candidate
) -> str:
    """What the candidate left out of a resolved name is told (``label``: its distribution)."""
    if decision.reason == "builtin":
        return (
            f"{kind} {name!r} of {label} not registered: bioprior's built-in "
            f"{kind} of that name always wins (BIOPRIOR_PREFER cannot override it); "
            f"rename it in {loser[0].provider}"
        )
    return (
        f"{kind} {name!r} of {label} not registered: BIOPRIOR_PREFER picks {winner[0].provider}'s"
    )


def _conflict_message(
    kind: str,
    name: str,
    decision: Decision,
    by_dist: Mapping[str, list[Candidate]],
    label: Mapping[str, str],
) -> str:
    """The failure of a name that two or more third parties provide and no pick resolves."""
    names = sorted(label.values())
    pick = decision.pick
    hint = f" (BIOPRIOR_PREFER picks {pick}, which does not provide it)" if pick else ""
    return (
        f"{kind} {name!r} is provided by {' and '.join(names)}, so neither is "
        f"registered{hint}: uninstall one, or pick one with "
        f"BIOPRIOR_PREFER='{name}={next(iter(sorted(by_dist)))}'"
    )


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: the module exited (code {exc.code!r}) while being imported"
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


__all__ = [
    "BUILTIN_DISTRIBUTION",
    "EntryOrigin",
    "PluginConflictError",
    "PluginFailure",
    "Registry",
    "UnknownPluginError",
    "get_registry",
    "normalize_distribution",
    "set_registry",
]
