"""Precedence: which of two entries of one kind and name wins, as a pure function.

Plain values in (the kind and name, the two entries' distributions, the user's picks from
``BIOPRIOR_PREFER``), a :class:`Decision` out. Never distribution names' order or install order:

1. one distribution registering a name twice keeps its first (``same-distribution``);
2. bioprior's own entry always wins over a third party's; a pick cannot override it (``builtin``);
3. of two third parties, the one the user picks (``kind:name=dist``, else ``name=dist``) wins
   (``preferred``);
4. else neither is registered: a conflict, with no pick for the name (``unpicked``) or a pick
   naming a distribution that provides neither (``pick-elsewhere``).

:func:`winner` applies the rule to every distribution that provides a name: the one that wins
against each of the others, or none. What the loser is told, and what is recorded, is
:mod:`.loading`'s business; so is strict mode (any loser is an error there), which never
changes who wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

BUILTIN_DISTRIBUTION = "bioprior"

Verdict = Literal["keep", "replace", "conflict"]
Reason = Literal["same-distribution", "builtin", "preferred", "unpicked", "pick-elsewhere"]


def normalize_distribution(name: str) -> str:
    """PEP 503 normalization: ``Bioprior_My.Plugin`` -> ``bioprior-my-plugin``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Decision:
    """Of the entry registered first (``kept``) and another of the same kind and name
    (``new``): ``keep`` the first, ``replace`` it with the new one, or register neither
    (``conflict``); ``reason`` says which rule decided, ``pick`` is the user's pick for the name
    (a normalized distribution name, or None)."""

    verdict: Verdict
    reason: Reason
    pick: str | None = None


def preferred(kind: str, name: str, prefer: Mapping[str, str]) -> str | None:
    """The distribution the user picks for ``kind`` ``name``: ``kind:name`` first, then
    ``name`` (None when neither is set)."""
    pick = prefer.get(f"{kind}:{name}") or prefer.get(name)
    return normalize_distribution(pick) if pick else None


def decide(
    kind: str, name: str, kept: str, new: str, prefer: Mapping[str, str] | None = None
) -> Decision:
    """Which of two entries of ``kind`` ``name`` is registered: the one from distribution
    ``kept`` (registered first) or the one from ``new``."""
    kept, new = normalize_distribution(kept), normalize_distribution(new)
    pick = preferred(kind, name, prefer or {})
    if kept == new:
        return Decision("keep", "same-distribution", pick)
    if BUILTIN_DISTRIBUTION in (kept, new):
        return Decision("keep" if kept == BUILTIN_DISTRIBUTION else "replace", "builtin", pick)
    if pick in (kept, new):
        return Decision("keep" if pick == kept else "replace", "preferred", pick)
    return Decision("conflict", "pick-elsewhere" if pick else "unpicked", pick)


def winner(
    kind: str, name: str, distributions: Sequence[str], prefer: Mapping[str, str] | None = None
) -> str | None:
    """Of every distribution that provides ``kind`` ``name``, the one whose entry is registered:
    the one that wins (:func:`decide`) against each of the others, whatever the order; None
    when none does (a conflict). Returned as given in ``distributions``."""
    for candidate in distributions:
        if all(
            decide(kind, name, candidate, other, prefer).verdict == "keep"
            for other in distributions
        ):
            return candidate
    return None


__all__ = [
    "BUILTIN_DISTRIBUTION",
    "Decision",
    "Reason",
    "Verdict",
    "decide",
    "normalize_distribution",
    "preferred",
    "winner",
]
