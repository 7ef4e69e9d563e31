"""The paper beside the measurement: a submission's ``reference:`` entries compared with the
stored results of its variants (pure arithmetic on store rows as plain dicts; no torch).

Per entry, over the seeds of the submission (``seeds:``) that have a finished result:

* measured mean and SEM: ``sem_m = sd / sqrt(k)``, ``sd`` the sample standard deviation
  (``ddof = 1``) of the ``k`` per-seed values; undefined for one seed. A difference entry
  (``minus:``) takes the difference of the two variants' means, with
  ``sem_m = sqrt(sem_a**2 + sem_b**2)`` (independent trainings).
* paper SEM: ``sem``, or ``sd / sqrt(n)``; none when the paper gives no uncertainty.
* ``delta = measured - paper`` and ``z = delta / sqrt(sem_m**2 + sem_p**2)``: the difference in
  units of its combined standard error (Welch's t statistic for two means). With one seed
  only the paper's SEM is used, with no paper uncertainty only the measured SEM, and the verdict
  says so; with neither, there is no z.

The verdict (:func:`verdict`), in this order: ``metric not stored`` (finished results, none of
which holds the metric); ``incomplete (k of n seeds)`` while fewer than all the submission's
``n`` seeds have finished (the numbers so far are still shown, and the rule's verdict on them:
``incomplete (8 of 10 seeds): disagrees so far``); ``untested (no uncertainty)``
when there is no z; else ``agrees`` for ``|z| <= 2``, ``tension`` for ``2 < |z| <= 3``,
``disagrees`` for ``|z| > 3``.

Values are compared in the paper's scale: with ``scale: percent`` the stored fractions are
multiplied by 100 (z does not depend on it).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bioprior.registry.base import safe_yaml
from bioprior.registry.submissions.loading import (
    InvalidSubmission,
    SubmissionError,
    _line_of,
    _pydantic_errors,
    non_finite,
)
from bioprior.registry.submissions.schema import (
    ReferenceEntry,
    Submission,
    point_label,
    reference_problems,
)

#: |z| at or under this: the measurement agrees with the paper
AGREE = 2.0
#: |z| at or under this (and over AGREE): tension; over it: disagrees
TENSION = 3.0
SCALE = {"percent": 100.0, "fraction": 1.0}


# -- statistics -------------------------------------------------------------------------------
def mean_sem(values: Iterable[float]) -> tuple[float | None, float | None]:
    """Mean and standard error of the mean (sample SD, ddof 1, over sqrt(n)); the SEM of one
    value is undefined (None), the mean of none too."""
    xs = [float(x) for x in values]
    if not xs:
        return None, None
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return mean, sd / math.sqrt(len(xs))


def paper_sem(entry: ReferenceEntry) -> float | None:
    """The paper's SEM: given, or ``sd / sqrt(n)``; None when the paper gives no uncertainty."""
    if entry.sem is not None:
        return entry.sem
    if entry.sd is not None and entry.n:
        return entry.sd / math.sqrt(entry.n)
    return None


def z_score(
    delta: float, sem_measured: float | None, sem_paper: float | None
) -> tuple[float | None, str]:
    """``delta`` over the combined standard error of the terms there are, and which were."""
    terms = [s for s in (sem_measured, sem_paper) if s is not None]
    se = math.sqrt(math.fsum(s * s for s in terms)) if terms else 0.0
    if se <= 0:
        return None, "no uncertainty"
    if sem_measured is None:
        return delta / se, "paper SEM only (1 seed)"
    if sem_paper is None:
        return delta / se, "measured SEM only (the paper gives none)"
    return delta / se, "combined SEM"


def verdict(z: float | None, done: int, seeds: int, stored: bool = True) -> str:
    """The verdict of one comparison by the rule in the module's docstring."""
    if not stored:
        return "metric not stored"
    if done < seeds:
        so_far = f": {_by_z(z)} so far" if z is not None and done > 0 else ""
        return f"incomplete ({done} of {seeds} seeds){so_far}"
    return "untested (no uncertainty)" if z is None else _by_z(z)


def _by_z(z: float) -> str:
    if abs(z) <= AGREE:
        return "agrees"
    return "tension" if abs(z) <= TENSION else "disagrees"


def number_text(value: float | None, digits: int = 4) -> str:
    """``value`` to ``digits`` significant digits; "–" for none."""
    return "–" if value is None else f"{value:.{digits}g}"


# -- reading a stored metric ------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def metric_value(metrics: dict[str, Any], metric: str) -> float | None:
    """The number ``metric`` names in one stored result (None when it holds none).

    ``a.b.c`` is a dotted path into the metrics. ``CURVE@EPS`` is the adversarial benchmark's
    curve ``CURVE`` in the scored mode (``score_mode``: stochastic when the model is, else
    deterministic) at the epsilon ``EPS`` as the submission gives it: the accuracy of the
    attack run at exactly that epsilon (``accuracy_raw``; the stored ``accuracy`` is the
    non-increasing envelope over the smaller epsilons, as ``robust_accuracy`` is); ``transfer``
    is the black-box curve when no curve has that name."""
    if "@" not in metric:
        node: Any = metrics
        for part in metric.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return _number(node)
    name, _, eps_text = metric.partition("@")
    eps = float(eps_text)
    modes = metrics.get("modes") if isinstance(metrics, dict) else None
    if not isinstance(modes, dict):
        return None
    mode = modes.get(metrics.get("score_mode") or "deterministic")
    if not isinstance(mode, dict):
        return None
    curve = (mode.get("curves") or {}).get(name)
    if curve is None and name == "transfer":
        curve = mode.get("transfer")
    if not isinstance(curve, dict):
        return None
    values = curve.get("accuracy_raw") or curve.get("accuracy")
    epsilons = curve.get("epsilons")
    if not isinstance(values, list) or not isinstance(epsilons, list):
        return None
    for e, v in zip(epsilons, values, strict=False):
        if _number(e) is not None and math.isclose(e, eps, rel_tol=1e-9, abs_tol=1e-12):
            return _number(v)
    return None


# -- comparing --------------------------------------------------------------------------------------
@dataclass
class Measured:
    """One variant's per-seed values of a metric (in the paper's scale)."""

    values: dict[int, float] = field(default_factory=dict)
    finished: int = 0  # seeds with a finished result, with the metric or without it
    older: int = 0  # results left out: an older one of a seed that has a newer

    @property
    def mean_sem(self) -> tuple[float | None, float | None]:
        return mean_sem(self.values[s] for s in sorted(self.values))


@dataclass
class Comparison:
    """One reference entry beside its measurement."""

    submission: str
    source: str
    entry: ReferenceEntry
    variant: dict[str, Any]
    minus: dict[str, Any] | None
    benchmark: str
    scale: str
    seeds: int
    measured: Measured
    baseline: Measured | None = None  # the ``minus`` variant's
    mean: float | None = None
    sem: float | None = None
    delta: float | None = None
    z: float | None = None
    basis: str = ""
    verdict: str = ""

    @property
    def variant_label(self) -> str:
        label = point_label(self.variant)
        return label if self.minus is None else f"{label} − {point_label(self.minus)}"

    @property
    def metric_label(self) -> str:
        unit = " (%)" if self.scale == "percent" else ""
        return f"{self.benchmark} {self.entry.metric}{unit}"

    @property
    def paper_sem(self) -> float | None:
        return paper_sem(self.entry)

    @property
    def done(self) -> int:
        counts = [len(self.measured.values)]
        if self.baseline is not None:
            counts.append(len(self.baseline.values))
        return min(counts)

    @property
    def note(self) -> str:
        """Why the z is what it is, and results left out."""
        parts = [self.basis] if self.basis not in ("", "combined SEM") else []
        older = self.measured.older + (self.baseline.older if self.baseline else 0)
        if older:
            parts.append(f"{older} older result{'s' if older > 1 else ''} of a seed left out")
        return "; ".join(parts)

    @property
    def cells(self) -> dict[str, str]:
        """The comparison as text, one cell per column of the tables (CLI and report)."""
        e, sem = self.entry, self.paper_sem
        paper = number_text(e.value) + (f" ± {number_text(sem, 2)}" if sem is not None else "")
        paper += f" (n={e.n})" if e.n else ""
        measured = number_text(self.mean)
        measured += f" ± {number_text(self.sem, 2)}" if self.sem is not None else ""
        return {
            "variant": self.variant_label,
            "metric": self.metric_label,
            "paper": paper,
            "measured": f"{measured} ({self.done} of {self.seeds} seeds)",
            "delta": "–" if self.delta is None else f"{self.delta:+.3g}",
            "z": "–" if self.z is None else f"{self.z:+.2f}",
            "verdict": self.verdict + (f"; {self.note}" if self.note else ""),
        }

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON: what ``bioprior results --paper --format json`` prints."""
        e = self.entry
        return {
            "submission": self.submission,
            "source": self.source,
            "variant": self.variant,
            "minus": self.minus,
            "label": self.variant_label,
            "benchmark": self.benchmark,
            "metric": e.metric,
            "scale": self.scale,
            "paper": {"value": e.value, "sem": self.paper_sem, "sd": e.sd, "n": e.n},
            "measured": {
                "mean": self.mean,
                "sem": self.sem,
                "seeds_done": self.done,
                "seeds": self.seeds,
                "values": {str(s): v for s, v in sorted(self.measured.values.items())},
                **(
                    {"minus_values": {str(s): v for s, v in sorted(self.baseline.values.items())}}
                    if self.baseline is not None
                    else {}
                ),
            },
            "delta": self.delta,
            "z": self.z,
            "basis": self.basis,
            "verdict": self.verdict,
            "note": self.note,
        }


def _key(variant: Any) -> str:
    return json.dumps(variant or {}, sort_keys=True, default=str)


def measure(
    rows: list[dict[str, Any]],
    variant: dict[str, Any],
    benchmark: str,
    metric: str,
    seeds: Iterable[int],
    factor: float = 1.0,
) -> Measured:
    """Per seed of ``seeds``, the metric of the newest finished result of ``variant`` on
    ``benchmark`` among ``rows`` (one submission's), times ``factor``."""
    wanted, key = set(seeds), _key(variant)
    newest: dict[int, dict[str, Any]] = {}
    out = Measured()
    for r in rows:
        if r.get("status") != "ok" or r.get("benchmark") != benchmark:
            continue
        if r.get("seed") not in wanted or _key(r.get("variant")) != key:
            continue
        seed = r["seed"]
        if seed in newest:
            out.older += 1
            if (r.get("finished_at") or "") <= (newest[seed].get("finished_at") or ""):
                continue
        newest[seed] = r
    for seed, r in newest.items():
        metrics = r.get("metrics")
        value = metric_value(metrics, metric) if isinstance(metrics, dict) else None
        if value is not None:
            out.values[seed] = value * factor
    out.finished = len(newest)
    return out


def compare(sub: Submission, rows: list[dict[str, Any]]) -> list[Comparison]:
    """Every reference entry of ``sub`` beside its measurement in ``rows`` (the store's rows;
    those of other submissions are ignored)."""
    if sub.reference is None:
        return []
    mine = [r for r in rows if r.get("submission") == sub.name]
    seeds = list(dict.fromkeys(sub.seeds))
    out = []
    for entry in sub.reference.entries:
        scale = entry.scale or sub.reference.scale
        factor = SCALE[scale]
        bench = entry.benchmark or sub.benchmarks[0].name
        variant = sub.variant_of(entry.variant)
        minus = sub.variant_of(entry.minus) if entry.minus is not None else None
        c = Comparison(
            sub.name,
            sub.reference.source,
            entry,
            variant,
            minus,
            bench,
            scale,
            len(seeds),
            measure(mine, variant, bench, entry.metric, seeds, factor),
        )
        if minus is not None:
            c.baseline = measure(mine, minus, bench, entry.metric, seeds, factor)
        _conclude(c)
        out.append(c)
    return out


def _conclude(c: Comparison) -> None:
    mean, sem = c.measured.mean_sem
    if c.baseline is not None:
        base_mean, base_sem = c.baseline.mean_sem
        mean = mean - base_mean if mean is not None and base_mean is not None else None
        sem = math.sqrt(sem**2 + base_sem**2) if sem is not None and base_sem is not None else None
    c.mean, c.sem = mean, sem
    finished = min(c.measured.finished, c.baseline.finished if c.baseline else c.seeds)
    stored = not (finished and c.done == 0)
    if mean is not None:
        c.delta = mean - c.entry.value
        c.z, c.basis = z_score(c.delta, sem, c.paper_sem)
    c.verdict = verdict(c.z, c.done, c.seeds, stored)


# -- reading a submission's reference ------------------------------------------------------------
def read_reference(path: str | os.PathLike) -> Submission:
    """A submission file checked against the schema only (no plugin is looked up, no file it
    names is read), its reference matched against its whole sweep; raises
    :class:`InvalidSubmission` (``FILE:LINE: field: message``)."""
    file = str(path)
    try:
        raw, root = safe_yaml.load_file(Path(path))
    except safe_yaml.YAMLInputError as exc:
        raise InvalidSubmission([SubmissionError(file, exc.line, "", exc.message)]) from None
    if not isinstance(raw, dict):
        raise InvalidSubmission(
            [SubmissionError(file, 1, "", "a submission must be a YAML mapping")]
        )
    bad = non_finite(raw)
    if bad:
        raise InvalidSubmission(
            [SubmissionError(file, _line_of(root, p), ".".join(map(str, p)), m) for p, m in bad]
        )
    try:
        sub = Submission.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSubmission(_pydantic_errors(file, root, exc)) from None
    if sub.reference is not None:
        problems = reference_problems(sub, whole=True)
        if problems:
            raise InvalidSubmission(
                [
                    SubmissionError(file, _line_of(root, loc), ".".join(map(str, loc)), msg)
                    for loc, msg, _ in problems
                ]
            )
    return sub
