"""The report's data: store rows read read-only and shaped into leaderboard variants and columns.

Only the results store is read (and, for learning curves, the JSON header of the cached
safetensors weights it names): no plugin or benchmark module is imported, so a report can be
built wherever the database is, without torch. Every metric is optional: a benchmark, a store
column (``error_class``, provenance) or a metric that is absent is left out, never required.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioprior.registry.store.results import ResultStore, StoreError
from bioprior.registry.submissions.loading import InvalidSubmission
from bioprior.registry.submissions.reference import Comparison, compare, read_reference
from bioprior.registry.submissions.schema import Submission as SubmissionModel

# Columns of the results table the report knows; any other column is shown as provenance.
KNOWN_COLUMNS = {
    "id",
    "job_key",
    "submission",
    "variant",
    "seed",
    "benchmark",
    "benchmark_version",
    "benchmark_params",
    "training_key",
    "metrics",
    "score",
    "status",
    "error",
    "error_class",
    "started_at",
    "finished_at",
    "duration_s",
    "device",
    "plugin_versions",
    "weights_hash",
    "weights",
    "spec",
    "bioprior_version",
}

FAMILIES = {
    "memorization": "memorization",
    "memorization_capacity": "memorization",
    "corruption": "corruption",
    "ood_stylized": "ood_stylized",
    "spectral": "spectral",
    "adversarial": "adversarial",
    "neural_predictivity": "neural_predictivity",
}

# Key metrics shown in each benchmark's leaderboard column group: (dotted path, label).
KEY_METRICS: dict[str, list[tuple[str, str]]] = {
    "memorization": [("natural_test_acc", "natural test"), ("random_train_acc", "random train")],
    "memorization_capacity": [],
    "corruption": [
        ("clean_acc", "clean"),
        ("mean_corruption_acc", "mCA"),
        ("mce", "mCE"),
        ("relative_mce", "rel. mCE"),
    ],
    "spectral": [("mean_band_acc", "band-pass")],
    "ood_stylized": [],  # its score is the mean accuracy over the renderings
    "adversarial": [
        ("clean_accuracy", "clean"),
        ("robust_accuracy", "robust"),
        ("median_minimal_l2", "median L2"),
    ],
    "neural_predictivity": [("feve", "FEVE"), ("correlation", "corr.")],
}
LOWER_IS_BETTER = {"mce", "relative_mce"}
# Flags that describe the model rather than warn about the evaluation.
INFO_FLAGS = {"stochastic_outputs"}
# Short labels of the adversarial sanity flags (the full names are in the cell's tooltip).
FLAG_LABELS = {
    "black_box_beats_white_box": "black box > white box",
    "single_step_beats_iterative": "FGSM > PGD",
    "non_monotonic": "non-monotonic",
    "unbounded_not_zero": "unbounded attack ≠ 0",
    "vanishing_gradients": "vanishing gradients",
    "stochastic_without_switch": "noise without switch",
    "stochastic_outputs": "stochastic",
}


class ReportError(ValueError):
    """Bad input to the report (a path or a submission name): one line for the CLI."""


# -- reading ------------------------------------------------------------------------------------
def read_rows(db: Path, submissions: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Every row of the results table (JSON columns decoded), opened read-only."""
    db = Path(db)
    try:
        with ResultStore.open_readonly(db) as store:  # immutable where the folder is read-only
            rows = store.rows()
    except StoreError as exc:  # not a store, or a row that is not what bioprior writes
        raise ReportError(f"--db: {exc}") from None
    except sqlite3.Error as exc:
        raise ReportError(f"--db: cannot read {db}: {exc}") from None
    wanted = list(dict.fromkeys(submissions))
    if wanted:
        known = sorted({r["submission"] for r in rows})
        missing = [s for s in wanted if s not in known]
        if missing:
            raise ReportError(
                f"--submission: no results for {missing[0]!r} in {db} "
                f"(known: {', '.join(known) or 'none'})"
            )
        rows = [r for r in rows if r["submission"] in wanted]
    return rows


def training_history(weights_dirs: Iterable[Path], training_key: str) -> dict[str, Any] | None:
    """The training history stored in a cached weights file's safetensors header (per-epoch
    ``accuracy``, ``loss``...), read without loading any tensor; None when not found."""
    for folder in weights_dirs:
        path = Path(folder) / f"{training_key}.safetensors"
        if not path.is_file():
            continue
        try:
            with path.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                if size > 100_000_000:
                    return None
                header = json.loads(fh.read(size))
            return json.loads(header.get("__metadata__", {}).get("history", "null"))
        except (OSError, ValueError, struct.error):
            return None
    return None


# -- small helpers ------------------------------------------------------------------------------
def number(value: Any) -> float | None:
    """A finite float, else None (bools and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


@dataclass(frozen=True)
class Stat:
    """Mean and spread (sample standard deviation) over seeds."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[Any]) -> Stat:
        xs = [v for v in (number(x) for x in values) if v is not None]
        if not xs:
            return cls(None, None, 0)
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
        return cls(mean, std, len(xs))

    def text(self, digits: int = 3) -> str:
        if self.mean is None:
            return "–"
        out = f"{self.mean:.{digits}f}"
        return out + (f" ± {self.std:.{digits}f}" if self.std is not None else "")


def error_class(row: dict[str, Any]) -> str | None:
    """The store's ``error_class`` when it has one, else the exception name the error starts
    with (``"ValueError: ..."`` -> ``ValueError``)."""
    if row.get("status") == "ok":
        return None
    if row.get("error_class"):
        return str(row["error_class"])
    match = re.match(r"\s*([A-Za-z_][\w.]*)\s*:", row.get("error") or "")
    return match.group(1) if match else "error"


#: the longest slug: a file name stays well under every file system's limit (255 bytes)
SLUG_MAX = 80


def slug(text: str) -> str:
    """``text`` as a file-name part: ASCII letters, digits, ``_.-``; a longer one is cut and
    ends with a short hash of the whole text, so two long names stay apart."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "x"
    if len(out) <= SLUG_MAX:
        return out
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{out[: SLUG_MAX - 13].rstrip('-.')}-{digest}"


def short_keys(paths: Iterable[str]) -> dict[str, str]:
    """Shortest unambiguous dotted suffix of each sweep path (constraints.0.params.sigma ->
    sigma); a zipped key "a,b" is shortened part by part."""
    paths = list(dict.fromkeys(paths))
    parts = list(dict.fromkeys(q for p in paths for q in p.split(",")))

    def short(q: str) -> str:
        bits = q.split(".")
        for k in range(1, len(bits) + 1):
            cand = ".".join(bits[-k:])
            if sum(1 for other in parts if other == cand or other.endswith("." + cand)) == 1:
                return cand
        return q

    return {p: ",".join(short(q) for q in p.split(",")) for p in paths}


def value_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


# -- shaping ------------------------------------------------------------------------------------
@dataclass
class Column:
    """A leaderboard column group: one benchmark with one parameter set."""

    id: str
    benchmark: str
    params: dict[str, Any]
    label: str
    family: str
    metrics: list[tuple[str, str]]


@dataclass
class Cell:
    column: Column
    ok: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def score(self) -> Stat:
        return Stat.of(r["score"] for r in self.ok)

    def metric(self, path: str) -> Stat:
        return Stat.of(get_path(r["metrics"], path) for r in self.ok)

    @property
    def flags(self) -> list[str]:
        """Sanity flags raised in any seed (adversarial ``metrics.flags``), warnings only."""
        raised = {
            k
            for r in self.ok
            for k, v in (get_path(r["metrics"], "flags") or {}).items()
            if v is True and k not in INFO_FLAGS
        }
        return sorted(raised)

    @property
    def info(self) -> list[str]:
        return sorted(
            {
                k
                for r in self.ok
                for k, v in (get_path(r["metrics"], "flags") or {}).items()
                if v is True and k in INFO_FLAGS
            }
        )

    @property
    def error_classes(self) -> list[str]:
        return sorted({error_class(r) or "error" for r in self.failed})


@dataclass
class Variant:
    """One submission variant (one point of its sweep): its rows over seeds and benchmarks."""

    submission: str
    values: dict[str, Any]
    label: str
    rows: list[dict[str, Any]]
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.submission} [{self.label}]"

    @property
    def seeds(self) -> list[int]:
        return sorted({r["seed"] for r in self.rows})

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]

    def overall(self, columns: Iterable[str] | None = None) -> Stat:
        """The mean of the column scores (each a mean over seeds) the variant has, a column
        without a score left out (documented choice); the spread is over seeds of each seed's
        mean over columns."""
        ids = [c for c in (list(columns) if columns is not None else list(self.cells))]
        cells = [self.cells[c] for c in ids if c in self.cells]
        mean = Stat.of(c.score.mean for c in cells).mean
        per_seed = [
            Stat.of(r["score"] for c in cells for r in c.ok if r["seed"] == seed).mean
            for seed in self.seeds
        ]
        return Stat(mean, Stat.of(per_seed).std if mean is not None else None, len(per_seed))


@dataclass
class Submission:
    name: str
    slug: str
    variants: list[Variant]
    sweep_keys: dict[str, str]  # sweep path -> short label
    #: the paper beside the measurement (the submission file's ``reference:``), when given
    paper: list[Comparison] = field(default_factory=list)
    #: each result against its baseline (``consistency.Pair``), filled by ``consistency.attach``
    consistency: list[Any] = field(default_factory=list)
    #: model-vs-human comparisons stored by ood_stylized (``consistency.Human``)
    humans: list[Any] = field(default_factory=list)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for v in self.variants for r in v.rows]


@dataclass
class Report:
    rows: list[dict[str, Any]]
    columns: list[Column]
    submissions: list[Submission]
    weights_dirs: list[Path]

    @property
    def variants(self) -> list[Variant]:
        return [v for s in self.submissions for v in s.variants]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


def _params_key(row: dict[str, Any]) -> str:
    return json.dumps(row.get("benchmark_params") or {}, sort_keys=True)


def columns_of(rows: list[dict[str, Any]]) -> tuple[list[Column], dict[tuple, str]]:
    """The leaderboard's columns and, per (submission, benchmark, parameters), its column id.

    A benchmark is one column; a submission that runs it with several parameter sets (e.g.
    memorization of Gaussian images and of random labels) gets one column per set, the k-th set
    of every submission sharing the k-th column, labelled by the parameters that differ.
    Submissions that run it with different budgets share a column (as leaderboards compare
    them), and the parameters of each result are on its submission page."""
    order = list(FAMILIES)
    sets: dict[tuple[str, str], list[str]] = {}  # (submission, benchmark) -> params keys
    params: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = _params_key(r)
        params.setdefault(key, r.get("benchmark_params") or {})
        found = sets.setdefault((r["submission"], r["benchmark"]), [])
        if key not in found:
            found.append(key)
    benches = sorted({b for _, b in sets}, key=lambda b: (order.index(b) if b in order else 99, b))
    out, where = [], {}
    used_ids: set[str] = set()
    for bench in benches:
        subs = {s: keys for (s, b), keys in sets.items() if b == bench}
        n = max(len(keys) for keys in subs.values())
        first = next(keys for keys in subs.values() if len(keys) == n)
        bench_rows = [r for r in rows if r["benchmark"] == bench]
        metrics = KEY_METRICS.get(bench)
        if metrics is None:  # a third-party benchmark: its first top-level numbers
            metrics = _numeric_metrics(bench_rows)
        for k in range(n):
            cid = slug(bench) + (f"-{k + 1}" if n > 1 else "")
            while cid.lower() in used_ids:  # two names with one slug ("a b", "a-b")
                cid += "_"
            used_ids.add(cid.lower())
            label = bench
            if n > 1:
                mine = params[first[k]]
                differing = [
                    name
                    for name in sorted({x for key in first for x in params[key]})
                    if len({value_text(params[key].get(name)) for key in first}) > 1
                ]
                shown = ", ".join(f"{d}={value_text(mine.get(d))}" for d in differing[:2])
                label = f"{bench} ({shown[:40] or k + 1})"
            col_rows = [
                r
                for r in bench_rows
                if k < len(subs[r["submission"]]) and subs[r["submission"]][k] == _params_key(r)
            ]
            out.append(
                Column(
                    cid,
                    bench,
                    params[first[k]],
                    label,
                    FAMILIES.get(bench, bench),
                    _present(metrics, col_rows),
                )
            )
            for s, keys in subs.items():
                if k < len(keys):
                    where[(s, bench, keys[k])] = cid
    return out, where


def _numeric_metrics(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    names: list[str] = []
    for r in rows:
        for k, v in (r.get("metrics") or {}).items():
            if number(v) is not None and k not in names:
                names.append(k)
    return [(n, n) for n in names[:3]]


def _present(metrics: list[tuple[str, str]], rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Only the key metrics some row actually has (metrics can be missing, e.g. mCE without a
    baseline)."""
    return [
        (p, lab)
        for p, lab in metrics
        if any(number(get_path(r.get("metrics") or {}, p)) is not None for r in rows)
    ]


def variant_label(values: dict[str, Any], keys: dict[str, str]) -> str:
    return ", ".join(f"{keys.get(k, k)}={value_text(v)}" for k, v in values.items()) or "default"


def shape(rows: list[dict[str, Any]], weights_dirs: Iterable[Path] = ()) -> Report:
    columns, where = columns_of(rows)
    by_id = {c.id: c for c in columns}
    subs: list[Submission] = []
    used_slugs: set[str] = set()
    for name in sorted({r["submission"] for r in rows}):
        sub_rows = [r for r in rows if r["submission"] == name]
        keys = short_keys(k for r in sub_rows for k in (r.get("variant") or {}))
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in sub_rows:
            groups.setdefault(json.dumps(r.get("variant") or {}, sort_keys=True), []).append(r)
        variants = []
        for vkey in sorted(groups, key=lambda k: _sort_key(json.loads(k))):
            vrows = groups[vkey]
            values = vrows[0].get("variant") or {}
            v = Variant(name, values, variant_label(values, keys), vrows)
            for r in vrows:
                col = by_id[where[(name, r["benchmark"], _params_key(r))]]
                cell = v.cells.setdefault(col.id, Cell(col))
                (cell.ok if r["status"] == "ok" else cell.failed).append(r)
            variants.append(v)
        s = slug(name)
        while s.lower() in used_slugs:  # "A" and "a" are one file where case is folded
            s += "_"
        used_slugs.add(s.lower())
        subs.append(Submission(name, s, variants, keys))
    return Report(rows, columns, subs, [Path(d) for d in weights_dirs])


def read_references(files: Iterable[str | Path | SubmissionModel]) -> list[SubmissionModel]:
    """Submission files (or parsed submissions) with a ``reference:``; one-line errors."""
    out = []
    for f in files:
        try:
            sub = f if isinstance(f, SubmissionModel) else read_reference(f)
        except InvalidSubmission as exc:
            raise ReportError(f"--paper: {exc.errors[0]}") from None
        if sub.reference is None:
            raise ReportError(f"--paper: {f} has no `reference:`")
        out.append(sub)
    return out


def attach_references(report: Report, references: Iterable[SubmissionModel]) -> None:
    """Each reference beside the measurement of its submission (one the report shows)."""
    by_name = {s.name: s for s in report.submissions}
    for ref in references:
        if ref.name in by_name:
            by_name[ref.name].paper = compare(ref, by_name[ref.name].rows)


def _sort_key(values: dict[str, Any]) -> list[tuple[int, Any]]:
    out = []
    for v in values.values():
        n = number(v)
        out.append((0, n) if n is not None else (1, value_text(v)))
    return out


def sweep_axis(sub: Submission) -> str | None:
    """The swept parameter to put on a plot's x axis: the first numeric one that varies."""
    for key in sub.sweep_keys:
        vals = {number(v.values.get(key)) for v in sub.variants}
        if len(vals) > 1 and None not in vals:
            return key
    return None
