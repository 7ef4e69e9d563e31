"""What every check takes: the :class:`Subject` under test (an entry, its registry and the
kit's :class:`KitConfig`), and the two ways a check ends early (:class:`CheckFailed`,
:class:`CheckSkipped`). A leaf of the kit: ``kit`` and the check modules import it, it imports
none of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bioprior import plugin

if TYPE_CHECKING:
    from bioprior.plugin import PluginEntry, Registry


class CheckFailed(AssertionError):
    """A check that failed; the message says what to fix."""


class CheckSkipped(Exception):
    """A check that does not apply to this entry (or needs data that is not on disk)."""


#: geometries every model is built for: (in_channels, num_classes, input_size)
GEOMETRIES: tuple[tuple[int, int, int], ...] = ((1, 10, 16), (3, 4, 32))


@dataclass
class KitConfig:
    """How the kit exercises entries. Keys of the mappings are ``"kind:name"`` or ``"name"``.

    ``params``: parameter overrides per entry, to keep checks small (a width, a tiny budget);
    ``geometries``: (channels, classes, size) each model is built for (per entry or ``"*"``);
    ``family_members``: the member a family entry's model checks run on (default: the first);
    ``submission``: the tiny submission a benchmark runs in (model and training; its
    ``benchmarks`` are replaced by the entry under test).
    """

    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    geometries: Mapping[str, tuple[tuple[int, int, int], ...]] = field(default_factory=dict)
    family_members: Mapping[str, str] = field(default_factory=dict)
    submission: Mapping[str, Any] = field(default_factory=dict)

    def lookup(self, table: Mapping[str, Any], entry: PluginEntry, default: Any = None) -> Any:
        for key in (f"{entry.kind}:{entry.name}", entry.name):
            if key in table:
                return table[key]
        return table.get("*", default)

    def params_for(self, entry: PluginEntry) -> dict[str, Any]:
        own = entry.extra.get("check_params", {})  # an entry may ship small parameters itself
        return {**own, **dict(self.lookup(self.params, entry, {}))}

    def geometries_for(self, entry: PluginEntry) -> tuple[tuple[int, int, int], ...]:
        return tuple(self.lookup(self.geometries, entry, GEOMETRIES))


class Subject:
    """An entry under test, with the registry it came from and the kit's configuration."""

    def __init__(self, entry: PluginEntry, registry: Registry, config: KitConfig):
        self.entry, self.registry, self.config = entry, registry, config
        self.cache: dict[Any, Any] = {}

    @property
    def params(self) -> dict[str, Any]:
        return self.config.params_for(self.entry)

    @property
    def target(self) -> PluginEntry:
        """The entry that is built: a family's member (``timm:test_resnet``) or the entry."""
        if "family_members" not in self.entry.extra:
            return self.entry
        if "target" not in self.cache:
            member = self.config.lookup(self.config.family_members, self.entry)
            if member is None:
                member = min(plugin.load_attribute(self.entry.extra["family_members"])())
            self.cache["target"] = self.registry.get(self.entry.kind, f"{self.entry.name}:{member}")
        return self.cache["target"]
