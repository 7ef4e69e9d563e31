"""Evaluation journals: a long evaluation that is killed or stopped resumes where it was.

An evaluation can take hours on a CPU (evanson Fig. 4A's adversarial protocol on an HMAX
network: about 2.5 h a model, most of it 40 batches of a 50-step PGD). A benchmark hands its
expensive units of work (an attacked batch, an attack's per-image results) to
:meth:`EvaluationJournal.cached` under labels unique within the job; each finished unit is kept
with the global torch RNG streams as it left them. A rerun of the same job recalls the units
instead of computing them and continues the streams from there, so a resumed evaluation gives
the numbers of an uninterrupted one (bit for bit on a CPU with the same thread count). A unit
recorded drops the units labelled under it (``label/...``): a finished attack keeps its
per-image results, not its batches.

The file is a training checkpoint's (:mod:`.checkpoint`: safetensors and JSON, never unpickled,
written atomically every ``BIOPRIOR_CHECKPOINT_INTERVAL`` seconds, ``off``: no journal) beside
the weights cache as ``<job key>.journal.safetensors``; it is trusted only for the same job, the
same trained weights, device type and thread count, and removed once the job's result is
computed. A stop loses the units since the last write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bioprior.registry.engine.checkpoint import (
    Checkpointer,
    Unusable,
    global_rng_state,
    saved,
    set_global_rng_state,
    software,
)

Tensors = dict[str, torch.Tensor]


class JournalCheckpointer(Checkpointer):
    """A :class:`Checkpointer` whose state is a journal's units."""

    mixed = "its results come from both (recorded in its provenance)"

    def where(self, state: dict[str, Any]) -> str:
        return f"{int(state['position'])} units of work recorded"


class EvaluationJournal:
    """One job's journal (see the module docstring); ``device``: where recalled tensors go and
    whose RNG stream is kept besides the CPU's."""

    def __init__(self, checkpointer: Checkpointer, device: torch.device):
        self.checkpointer, self.device = checkpointer, torch.device(device)
        state = checkpointer.resume(device="cpu")
        self.units: dict[str, dict[str, Any]] = dict(state["units"]) if state else {}
        self.recalled = 0
        #: seconds the recorded units took (in every run that added some), and since when
        self.seconds = float(state.get("seconds", 0.0)) if state else 0.0
        self._since = time.perf_counter()

    @classmethod
    def at(
        cls,
        path: Path,
        identity: dict[str, Any],
        device: torch.device,
        notice: Callable[[str], None] | None = None,
        label: str = "evaluation",
    ) -> EvaluationJournal:
        """The journal at ``path`` for ``identity`` (written as ``BIOPRIOR_CHECKPOINT_INTERVAL``
        says)."""
        identity = {**identity, "device": torch.device(device).type}
        return cls(JournalCheckpointer.from_env(path, identity, notice, label), device)

    def cached(self, label: str, compute: Callable[[], Tensors]) -> Tensors:
        """``compute()`` (named tensors), or what it gave in an earlier run of this job, the RNG
        streams then set as it left them."""
        unit = self.units.get(label)
        if unit is not None:
            set_global_rng_state(unit["rng"], self.device)
            self.recalled += 1
            return {name: t.to(self.device) for name, t in unit["tensors"].items()}
        out = compute()
        if not self.checkpointer.enabled:
            return out
        inner = label + "/"
        self.units = {k: v for k, v in self.units.items() if not k.startswith(inner)}
        self.units[label] = {
            "tensors": {name: t.detach() for name, t in out.items()},
            "rng": global_rng_state(self.device),
        }
        if self.checkpointer.due(0, len(self.units)):
            seconds = self.seconds + time.perf_counter() - self._since
            state = {"epoch": 0, "position": len(self.units), "units": self.units}
            self.checkpointer.save({**state, "seconds": seconds})
        return out

    @property
    def resumed(self) -> dict[str, Any] | None:
        """What a resumed evaluation's provenance records: the units recalled and, where it
        differed, the software that computed them; None where nothing was recalled."""
        if not self.recalled:
            return None
        out: dict[str, Any] = {"units_recalled": self.recalled}
        then = self.checkpointer.resumed_software
        if then and then != software(self.device.type):
            out["software"] = then
        return out

    def finish(self) -> None:
        """The job's result is computed: remove the journal."""
        self.checkpointer.finish()


def journal_progress(path: Path, **expected: Any) -> tuple[int, float] | None:
    """(units recorded, seconds they took) in the journal at ``path`` if its identity has the
    ``expected`` values (``job``, ``threads``, ``device``: what a plan knows; a rerun checks the
    rest), from its metadata alone; else None."""
    try:
        identity, state = saved(path)
        if any(identity.get(k) != v for k, v in expected.items()):
            return None
        return len(state["units"]), float(state.get("seconds", 0.0))
    except (Unusable, OSError, KeyError, TypeError, ValueError, AttributeError):
        return None


class NoJournal:
    """Computes every unit (an evaluation outside a scorer's job)."""

    recalled = 0
    resumed = None

    def cached(self, label: str, compute: Callable[[], Tensors]) -> Tensors:
        return compute()

    def finish(self) -> None:
        pass


#: the journal of an evaluation that keeps none (the default of a benchmark's helpers)
NO_JOURNAL = NoJournal()
