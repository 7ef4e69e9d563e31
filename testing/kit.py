"""The kit's machinery: which checks apply to which entry, one :class:`Check` per (entry, check),
pytest parametrization and a runner for ``bioprior plugins check``."""

from __future__ import annotations

import fnmatch
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bioprior import plugin
from bioprior.registry.hooks.precedence import normalize_distribution

from .checks import checks_of_kind
from .subject import GEOMETRIES, CheckFailed, CheckSkipped, KitConfig, Subject

if TYPE_CHECKING:
    from bioprior.plugin import PluginEntry, Registry

__all__ = [  # the kit's names; CheckFailed ... Subject live in .subject, a leaf
    "GEOMETRIES",
    "Check",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "KitConfig",
    "Subject",
    "checks_for",
    "parametrize_with_checks",
    "run_checks",
    "select_entries",
]


@dataclass
class Check:
    """One conformance check of one entry; call it to run it (raises :class:`CheckFailed`)."""

    entry: PluginEntry
    name: str
    function: Callable[[Subject], None] = field(repr=False)
    subject: Subject = field(repr=False)
    expected_failure: str | None = None
    slow: str | None = None

    @property
    def entry_id(self) -> str:
        return f"{self.entry.kind}:{self.entry.name}"

    @property
    def id(self) -> str:
        return f"{self.entry_id}::{self.name}"

    def __call__(self) -> None:
        try:
            self.function(self.subject)
        except CheckSkipped as exc:
            import pytest

            pytest.skip(str(exc))

    def outcome(self) -> tuple[str, str]:
        """Run outside pytest: ("ok" | "failed" | "expected failure" | "unexpected pass" |
        "skipped", message)."""
        try:
            self.function(self.subject)
        except CheckSkipped as exc:
            return "skipped", str(exc)
        except Exception as exc:  # noqa: BLE001 - every error is a finding
            message = _message(exc)
            return ("expected failure", message) if self.expected_failure else ("failed", message)
        if self.expected_failure:
            return "unexpected pass", f"listed as expected failure ({self.expected_failure})"
        return "ok", ""


def _message(exc: BaseException) -> str:
    if isinstance(exc, CheckFailed):
        return " ".join(str(exc).split())
    where = traceback.extract_tb(exc.__traceback__)[-1]
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text} (at {where.filename}:{where.lineno})"


def select_entries(
    registry: Registry,
    distribution: str | Iterable[str] | None = None,
    names: Iterable[str] | None = None,
    kind: str | None = None,
) -> list[PluginEntry]:
    """Entries of ``distribution`` (one or several; None: all), optionally only ``names``
    (globs on ``name`` or ``kind:name``) and one ``kind``."""
    dists = None
    if distribution is not None:
        dists = {
            normalize_distribution(d)
            for d in ([distribution] if isinstance(distribution, str) else distribution)
        }
    patterns = list(names) if names is not None else None
    found = []
    for entry in registry.list(kind):
        if dists is not None and normalize_distribution(entry.provider) not in dists:
            continue
        if patterns is not None and not any(
            fnmatch.fnmatch(entry.name, p) or fnmatch.fnmatch(f"{entry.kind}:{entry.name}", p)
            for p in patterns
        ):
            continue
        found.append(entry)
    return found


def checks_for(
    entries: Iterable[PluginEntry] | None = None,
    *,
    distribution: str | Iterable[str] | None = None,
    names: Iterable[str] | None = None,
    registry: Registry | None = None,
    config: KitConfig | None = None,
    expected_failed_checks: Mapping[str, Mapping[str, str]] | None = None,
    slow_checks: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Check]:
    """Every applicable :class:`Check` of ``entries`` (or of a distribution's entries).

    ``expected_failed_checks`` / ``slow_checks``: {"kind:name" or "name": {check: reason}}; a
    check name ``"*"`` covers all checks of the entry. An entry may declare its own known
    failures with ``extra={"expected_failed_checks": {check: reason}}`` (and small check
    parameters with ``extra={"check_params": {...}}``); ``bioprior plugins check`` honours both."""
    registry = registry or plugin.get_registry()
    config = config or KitConfig()
    if entries is None:
        entries = select_entries(registry, distribution, names)
        if not entries:
            raise LookupError(
                f"no entries registered by {distribution!r}"
                + (f" named {list(names)}" if names else "")
                + "; is it installed (pip install -e .) and is its entry point in the "
                "'bioprior' group? See `bioprior plugins`."
            )
    checks: list[Check] = []
    for entry in entries:
        subject = Subject(entry, registry, config)
        expected = {  # the entry's own declaration, then the caller's
            **entry.extra.get("expected_failed_checks", {}),
            **(config.lookup(expected_failed_checks or {}, entry, {}) or {}),
        }
        slow = config.lookup(slow_checks or {}, entry, {}) or {}
        for name, function in checks_of_kind(entry):
            checks.append(
                Check(
                    entry,
                    name,
                    function,
                    subject,
                    expected.get(name, expected.get("*")),
                    slow.get(name, slow.get("*")),
                )
            )
    return checks


def parametrize_with_checks(
    distribution: str | Iterable[str] | None = None,
    *,
    names: Iterable[str] | None = None,
    entries: Iterable[PluginEntry] | None = None,
    expected_failed_checks: Mapping[str, Mapping[str, str]] | None = None,
    slow_checks: Mapping[str, Mapping[str, str]] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    geometries: Mapping[str, tuple[tuple[int, int, int], ...]] | None = None,
    family_members: Mapping[str, str] | None = None,
    submission: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
):
    """A ``pytest.mark.parametrize("check", ...)`` with one item per (entry, check), ids like
    ``model:my_net::output_shape``. Expected failures are ``xfail`` with their reason; slow
    checks are marked ``slow``."""
    import pytest

    config = KitConfig(
        params=params or {},
        geometries=geometries or {},
        family_members=family_members or {},
        submission=submission or {},
    )
    checks = checks_for(
        entries,
        distribution=distribution,
        names=names,
        registry=registry,
        config=config,
        expected_failed_checks=expected_failed_checks,
        slow_checks=slow_checks,
    )
    values = []
    for check in checks:
        marks = []
        if check.expected_failure:
            marks.append(pytest.mark.xfail(reason=check.expected_failure, strict=False))
        if check.slow:
            marks.append(pytest.mark.slow)
        values.append(pytest.param(check, id=check.id, marks=marks))
    return pytest.mark.parametrize("check", values)


@dataclass(frozen=True)
class CheckResult:
    entry: str
    check: str
    status: str
    message: str


def run_checks(checks: Iterable[Check], include_slow: bool = True) -> list[CheckResult]:
    """Run checks outside pytest (``bioprior plugins check``)."""
    results = []
    for check in checks:
        if check.slow and not include_slow:
            results.append(
                CheckResult(check.entry_id, check.name, "skipped", f"slow: {check.slow}")
            )
            continue
        status, message = check.outcome()
        results.append(CheckResult(check.entry_id, check.name, status, message))
    return results
