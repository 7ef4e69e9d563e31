"""``bioprior score --verify N``: retrain N finished jobs from scratch and compare.

The weights cache is neither read nor written (the jobs train in a temporary home) and the
results store is left as it is; each job's score, metrics and weights hash are compared with
the stored row. On CPU the numbers depend on the thread count (see :mod:`.threads`), so a
drift report names the thread count stored with the row next to the current one.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bioprior.registry.planning.jobs import Job, plan
from bioprior.registry.scoring.scorer import Scorer
from bioprior.registry.store.results import ResultStore, _json_default
from bioprior.registry.submissions.loading import LoadedSubmission


@dataclass
class Drift:
    label: str
    changes: list[str] = field(default_factory=list)  # "score 0.9105 -> 0.9331", ...
    error: str | None = None

    @property
    def drifted(self) -> bool:
        return bool(self.changes) or self.error is not None

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.label}: failed to rerun: {self.error}"
        if not self.changes:
            return f"{self.label}: same numbers, same weights"
        return f"{self.label}: DRIFT: " + "; ".join(self.changes)


def _canonical(metrics: Any) -> str:
    return json.dumps(metrics, sort_keys=True, default=_json_default)


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


#: metrics a rerun stores that rows scored before they were kept lack (per-image results, which
#: change no number): absent from the stored row, they are not drift
ADDED_LATER = frozenset({"correct"})


def _without_added(old: Any, new: Any) -> Any:
    """``new`` without the :data:`ADDED_LATER` keys that ``old`` lacks, at any depth."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    return {
        k: _without_added(old.get(k), v)
        for k, v in new.items()
        if not (k in ADDED_LATER and k not in old)
    }


def compare(stored: dict[str, Any], score: float | None, metrics: dict[str, Any], weights_hash):
    """Differences between a stored row and a rerun's numbers, one phrase each."""
    changes = []
    if not _same(stored.get("score"), score):
        changes.append(f"score {_number(stored.get('score'))} -> {_number(score)}")
    old = stored.get("metrics") or {}
    new = _without_added(old, json.loads(_canonical(metrics)))
    for key in sorted(set(old) | set(new)):
        if _canonical(old.get(key)) == _canonical(new.get(key)):
            continue
        a, b = old.get(key), new.get(key)
        scalar = all(isinstance(v, (int, float)) or v is None for v in (a, b))
        changes.append(f"{key} {_number(a)} -> {_number(b)}" if scalar else f"{key} differs")
    if stored.get("weights_hash") != weights_hash:
        changes.append(f"weights {stored.get('weights_hash')} -> {weights_hash}")
    return changes


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def stored_threads(row: dict[str, Any]) -> int | None:
    provenance = row.get("provenance") or {}
    return provenance.get("torch_num_threads") if isinstance(provenance, dict) else None


class _Scratch(ResultStore):
    """An empty store (in a temporary home) in which the jobs not chosen count as done, so the
    scorer plans and runs only the chosen ones."""

    def __init__(self, path: str, done: set[tuple[str, str]]) -> None:
        super().__init__(path)
        self._done = set(done)

    def done(self) -> set[tuple[str, str]]:
        return set(self._done)


def verify(
    loaded: Sequence[LoadedSubmission],
    store,
    registry,
    count: int,
    device: str = "auto",
    reporter=None,
) -> tuple[list[Drift], int]:
    """Retrain the first ``count`` finished jobs of ``loaded`` (plan order) without the weights
    cache; returns one :class:`Drift` per job and how many finished jobs there were."""
    rows = {(r["submission"], r["job_key"]): r for r in store.rows(status="ok")}
    jobs = plan(loaded)
    finished: list[Job] = [j for j in jobs if (j.submission, j.key) in rows]
    chosen = finished[:count]
    drifts: list[Drift] = []
    if not chosen:
        return drifts, 0
    keep = {(j.submission, j.key) for j in chosen}
    others = {(j.submission, j.key) for j in jobs} - keep
    with (
        tempfile.TemporaryDirectory(prefix="bioprior-verify-") as home,
        _Scratch(f"{home}/scratch.sqlite", others) as scratch,
    ):
        scorer = Scorer(scratch, registry, device=device, home=home, reporter=reporter)
        _, summary = scorer.plan(loaded)
        report = scorer.run(summary)
    for outcome in report.outcomes:
        job = outcome.job
        row = rows[(job.submission, job.key)]
        drift = Drift(job.label)
        if outcome.status != "ok":
            drift.error = outcome.error
        else:
            drift.changes = compare(row, outcome.score, outcome.metrics, outcome.weights_hash)
            threads = stored_threads(row)
            if drift.changes and threads is not None:
                import torch

                drift.changes.append(
                    f"stored with {threads} thread(s), rerun with {torch.get_num_threads()}"
                )
        drifts.append(drift)
    return drifts, len(finished)
