"""Error consistency in the report: every variant against its unconstrained baseline, per
condition, from the per-image correctness the benchmarks store (``correct``, packed by
``bioprior.plugin.pack_correct``), and the model-vs-human numbers ``ood_stylized`` stores for
external sets with human trials.

Error consistency (Geirhos, Meding & Wichmann 2020, NeurIPS, Eq. 1-3) is Cohen's kappa on
trial-by-trial correctness: ``(c_obs - c_exp) / (1 - c_exp)`` with ``c_obs`` the fraction of
images both got right or both got wrong and ``c_exp = p1 p2 + (1 - p1)(1 - p2)`` what the two
accuracies alone predict; undefined (None) when ``c_exp == 1`` (both always right or always
wrong); see :mod:`bioprior.registry.toolkit.consistency`.

The baseline of a result (a row: one variant, seed and benchmark):

1. the baseline the benchmark scored in the same job, when it stored its correctness
   (``baseline.correct``: ``corruption``'s named baseline, by default the submission's model
   without constraints);
2. else the stored result of the same benchmark, with the same parameters, whose training is the
   row's training without constraints (same model, recipe, dataset and seed: same test images).
   It is found by its training key, so it may be a variant of the same submission (sweep
   ``constraints.0.enabled: [true, false]``) or any other submission in the report.

Rows scored before per-image results were stored have none: they are listed with a note, never
guessed. Nothing here imports torch, a plugin or a benchmark.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from bioprior.registry.base.hashing import content_hash
from bioprior.registry.toolkit.consistency import consistency, packed_leaves, unpack_correct

from .data import Column, Report, Stat, Submission, Variant, number

#: benchmarks that store per-image correctness (others are listed only where a row has it)
PER_IMAGE = {"corruption", "spectral", "ood_stylized"}
NOT_STORED = "per-image results not stored for this row (scored before they were kept)"
NOT_STORED_BASE = "per-image results not stored for the baseline's row"
NO_BASELINE = (
    "no unconstrained baseline scored on this benchmark (score the network without its "
    "constraints too, e.g. sweep constraints.0.enabled: [true, false])"
)


@dataclass(frozen=True)
class Condition:
    """One condition's agreement (``path``: where it is in ``correct``, e.g. ("fog", "3"))."""

    path: tuple[str, ...]
    n: int
    kappa: float | None
    observed: float
    expected: float
    accuracy: float
    baseline_accuracy: float

    @property
    def label(self) -> str:
        return " ".join(self.path)


@dataclass
class Pair:
    """One result (variant, seed, benchmark column) against its baseline."""

    column: Column
    variant: Variant
    seed: int
    baseline: str  # how the baseline was found, for the table
    itself: bool = False  # the row is its own baseline (kappa 1 wherever defined)
    conditions: list[Condition] = field(default_factory=list)
    note: str = ""

    @property
    def mean_kappa(self) -> float | None:
        return Stat.of(c.kappa for c in self.conditions).mean

    @property
    def mean_observed(self) -> float | None:
        return Stat.of(c.observed for c in self.conditions).mean


@dataclass
class Human:
    """ood_stylized: one external set's model-vs-human comparison in one row."""

    column: Column
    variant: Variant
    seed: int
    external: str
    numbers: dict[str, Any]


def baseline_training_key(row: dict[str, Any]) -> str | None:
    """The training key of the row's training without constraints (as the planner keys it:
    the content hash of the training identity), or None when the row has no stored spec."""
    training = (
        (row.get("spec") or {}).get("training") if isinstance(row.get("spec"), dict) else None
    )
    if not isinstance(training, dict) or "constraints" not in training:
        return None
    return content_hash({**training, "constraints": []})


def _params(row: dict[str, Any]) -> str:
    return json.dumps(row.get("benchmark_params") or {}, sort_keys=True)


def compare_trees(own: Any, base: Any) -> list[Condition]:
    """Per condition present in both (same path, same image count), the agreement."""
    theirs = dict(packed_leaves(base))
    out = []
    for path, packed in packed_leaves(own):
        other = theirs.get(path)
        if other is None or other["n"] != packed["n"] or packed["n"] == 0:
            continue
        try:
            a, b = unpack_correct(packed), unpack_correct(other)
        except ValueError:
            continue
        c = consistency(a, b)
        out.append(
            Condition(path, c.n, c.kappa, c.observed, c.expected, c.accuracy_a, c.accuracy_b)
        )
    return out


def _describe(row: dict[str, Any], by_id: dict[int, tuple[Submission, Variant]], sub_name: str):
    sub, variant = by_id[id(row)]
    if sub.name == sub_name:
        return f"variant {variant.label}"
    return f"{sub.name} [{variant.label}]"


def attach(report: Report) -> None:
    """Fill ``consistency`` and ``humans`` of every submission of ``report``."""
    by_id: dict[int, tuple[Submission, Variant]] = {}
    index: dict[tuple[str, str, str], dict[str, Any]] = {}
    for sub in report.submissions:
        for v in sub.variants:
            for r in v.rows:
                by_id[id(r)] = (sub, v)
                if r.get("status") == "ok" and r.get("training_key"):
                    index.setdefault((r["benchmark"], _params(r), r["training_key"]), r)
    for sub in report.submissions:
        pairs: list[Pair] = []
        humans: list[Human] = []
        for col in report.columns:
            rows = [
                r for v in sub.variants for r in (v.cells[col.id].ok if col.id in v.cells else [])
            ]
            if not rows or not (
                col.benchmark in PER_IMAGE or any("correct" in (r["metrics"] or {}) for r in rows)
            ):
                continue
            for v in sub.variants:
                cell = v.cells.get(col.id)
                for r in sorted(cell.ok if cell else [], key=lambda r: r["seed"]):
                    pairs.append(_pair(r, col, v, index, by_id, sub.name))
                    for name, ext in ((r["metrics"] or {}).get("external") or {}).items():
                        if isinstance(ext, dict) and isinstance(ext.get("human"), dict):
                            humans.append(Human(col, v, r["seed"], name, ext["human"]))
        sub.consistency = pairs
        sub.humans = humans


def _pair(row, col, variant, index, by_id, sub_name) -> Pair:
    metrics = row.get("metrics") or {}
    own = metrics.get("correct")
    named = metrics.get("baseline") if isinstance(metrics.get("baseline"), dict) else None
    if named is not None and ("correct" in named or own is None):
        cons = named.get("constraints") or []
        names = ", ".join(str(c.get("name")) for c in cons if isinstance(c, dict)) or "none"
        pair = Pair(
            col, variant, row["seed"], f"{row['benchmark']}'s baseline (constraints: {names})"
        )
        pair.itself = named.get("weights_hash") is not None and named.get(
            "weights_hash"
        ) == row.get("weights_hash")
        if own is None:
            pair.note = NOT_STORED
        else:
            pair.conditions = compare_trees(own, named["correct"])
        return pair
    key = baseline_training_key(row)
    base = index.get((row["benchmark"], _params(row), key)) if key else None
    if base is None:
        return Pair(col, variant, row["seed"], "–", note=NOT_STORED if own is None else NO_BASELINE)
    pair = Pair(col, variant, row["seed"], _describe(base, by_id, sub_name), itself=base is row)
    if own is None:
        pair.note = NOT_STORED
    elif (base.get("metrics") or {}).get("correct") is None:
        pair.note = NOT_STORED_BASE
    else:
        pair.conditions = compare_trees(own, base["metrics"]["correct"])
    return pair


# -- summaries ----------------------------------------------------------------------------------
def summary(sub: Submission) -> list[dict[str, Any]]:
    """One line per (column, variant): mean kappa over conditions, mean and spread over seeds."""
    groups: dict[tuple[str, str], list[Pair]] = {}
    for p in sub.consistency:
        groups.setdefault((p.column.id, p.variant.label), []).append(p)
    out = []
    for pairs in groups.values():
        done = [p for p in pairs if p.conditions]
        out.append(
            {
                "column": pairs[0].column,
                "variant": pairs[0].variant.label,
                "baseline": "; ".join(dict.fromkeys(p.baseline for p in pairs)),
                "itself": all(p.itself for p in pairs),
                "seeds": len(done),
                "kappa": Stat.of(p.mean_kappa for p in done),
                "observed": Stat.of(p.mean_observed for p in done),
                "conditions": max((len(p.conditions) for p in done), default=0),
                "undefined": max(
                    (sum(c.kappa is None for c in p.conditions) for p in done), default=0
                ),
                "note": "; ".join(dict.fromkeys(p.note for p in pairs if p.note)),
            }
        )
    return out


def human_summary(sub: Submission) -> list[dict[str, Any]]:
    """One line per (column, variant, external set, condition; "all" first): mean over seeds."""
    groups: dict[tuple[str, str, str], list[Human]] = {}
    for h in sub.humans:
        groups.setdefault((h.column.id, h.variant.label, h.external), []).append(h)
    keys = ("error_consistency", "accuracy_difference", "model_accuracy", "human_accuracy")
    out = []
    for hs in groups.values():
        conds = list(dict.fromkeys(c for h in hs for c in (h.numbers.get("conditions") or {})))
        for cond in ["all", *conds]:
            nums = [
                h.numbers if cond == "all" else (h.numbers.get("conditions") or {}).get(cond)
                for h in hs
            ]
            nums = [n for n in nums if isinstance(n, dict)]
            line = {
                "column": hs[0].column,
                "variant": hs[0].variant.label,
                "external": hs[0].external,
                "condition": cond,
                "seeds": len(nums),
                "subjects": max((number(n.get("subjects")) or 0 for n in nums), default=0),
                "trials": max((number(n.get("trials")) or 0 for n in nums), default=0),
            }
            line.update({k: Stat.of(n.get(k) for n in nums) for k in keys})
            out.append(line)
    return out


CSV_HEAD = (
    "submission",
    "variant",
    "seed",
    "benchmark",
    "column",
    "baseline",
    "condition",
    "images",
    "error_consistency",
    "observed_consistency",
    "expected_consistency",
    "accuracy",
    "baseline_accuracy",
    "note",
)


def as_csv(report: Report) -> str:
    """One line per (submission, variant, seed, benchmark column, condition); a result without
    numbers is one line with its note."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEAD)
    for sub in report.submissions:
        for p in sub.consistency:
            head = [sub.name, p.variant.label, p.seed, p.column.benchmark, p.column.id, p.baseline]
            if not p.conditions:
                w.writerow([*head, "", "", "", "", "", "", "", p.note])
            for c in p.conditions:
                w.writerow(
                    [
                        *head,
                        c.label,
                        c.n,
                        c.kappa,
                        c.observed,
                        c.expected,
                        c.accuracy,
                        c.baseline_accuracy,
                        "its own baseline" if p.itself else "",
                    ]
                )
    return buf.getvalue()


def as_json(report: Report) -> list[dict[str, Any]]:
    """Every pair with its per-condition numbers, and every model-vs-human comparison."""
    out = []
    for sub in report.submissions:
        out.append(
            {
                "submission": sub.name,
                "baseline": [
                    {
                        "variant": p.variant.label,
                        "values": p.variant.values,
                        "seed": p.seed,
                        "benchmark": p.column.benchmark,
                        "column": p.column.id,
                        "baseline": p.baseline,
                        "its_own_baseline": p.itself,
                        "mean_error_consistency": p.mean_kappa,
                        "note": p.note or None,
                        "conditions": {
                            c.label: {
                                "images": c.n,
                                "error_consistency": c.kappa,
                                "observed_consistency": c.observed,
                                "expected_consistency": c.expected,
                                "accuracy": c.accuracy,
                                "baseline_accuracy": c.baseline_accuracy,
                            }
                            for c in p.conditions
                        },
                    }
                    for p in sub.consistency
                ],
                "humans": [
                    {
                        "variant": h.variant.label,
                        "seed": h.seed,
                        "benchmark": h.column.benchmark,
                        "column": h.column.id,
                        "external": h.external,
                        **h.numbers,
                    }
                    for h in sub.humans
                ],
            }
        )
    return out


__all__ = ["Condition", "Human", "Pair", "as_csv", "as_json", "attach", "baseline_training_key"]
