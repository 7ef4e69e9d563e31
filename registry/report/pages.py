"""The static site: Jinja2 pages (leaderboard, one per submission, compare), data files and
assets, written into one folder that works from ``file://`` (no CDN, no server)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bioprior.registry.base.paths import weights_dir
from bioprior.registry.submissions.schema import Submission as SubmissionModel

from . import consistency
from .data import (
    FLAG_LABELS,
    KNOWN_COLUMNS,
    LOWER_IS_BETTER,
    Cell,
    Column,
    Report,
    ReportError,
    Stat,
    Submission,
    attach_references,
    error_class,
    number,
    read_references,
    read_rows,
    shape,
    training_history,
)
from .plots import Plot, paper_plots, submission_plots

ASSETS = ("report.css", "report.js")


@dataclass
class Site:
    """What was written: the folder, its pages, the figures and the rows they show."""

    out: Path
    pages: list[Path]
    plots: dict[str, list[Plot]]
    report: Report

    @property
    def index(self) -> Path:
        return self.out / "index.html"


def build_report(
    db: str | os.PathLike,
    out: str | os.PathLike,
    submissions: list[str] | tuple[str, ...] = (),
    weights_dirs: list[str | os.PathLike] | None = None,
    references: Iterable[str | os.PathLike | SubmissionModel] = (),
) -> Site:
    """Read the store at ``db`` (read-only) and write the site into ``out``.

    ``weights_dirs``: where the cached weights (and with them the training histories behind the
    learning curves) are looked for; default ``weights/`` beside the database, then
    ``$BIOPRIOR_HOME/weights``. ``references``: submission files (or parsed submissions) whose
    ``reference:`` is shown beside the measurement on their submission's page (a table and a
    figure); one whose submission has no results in the report is left out."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"-o: {out} exists and is not a directory")
    papers = read_references(references)
    rows = read_rows(Path(db), submissions)
    if weights_dirs is None:
        weights_dirs = list(dict.fromkeys([Path(db).parent / "weights", weights_dir()]))
    report = shape(rows, weights_dirs)
    attach_references(report, papers)
    consistency.attach(report)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "submissions").mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ReportError(f"-o: cannot write to {out}: {exc}") from exc
    histories: dict[str, Any] = {}

    def history(key: str | None):
        if key and key not in histories:
            histories[key] = training_history(report.weights_dirs, key)
        return histories.get(key) if key else None

    plots = {s.name: submission_plots(s, report.columns, out, history) for s in report.submissions}
    for s in report.submissions:
        plots[s.name] += paper_plots(s, out)
    env = _environment()
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    common = {
        "generated": generated,
        "columns": report.columns,
        "nsubs": len(report.submissions),
    }
    pages = []
    board = leaderboard(report)
    pages.append(
        _write(
            out / "index.html",
            env.get_template("index.html").render(
                root=".", board=board, failed=failures(report.failed), report=report, **common
            ),
        )
    )
    for sub in report.submissions:
        cols = [c for c in report.columns if any(c.id in v.cells for v in sub.variants)]
        pages.append(
            _write(
                out / "submissions" / f"{sub.slug}.html",
                env.get_template("submission.html").render(
                    root="..",
                    sub=sub,
                    board=[r for r in board if r["submission"] == sub.name],
                    sub_columns=cols,
                    spec=spec_text(sub),
                    sweep=[(sub.sweep_keys[k], k) for k in sub.sweep_keys],
                    provenance=provenance(sub),
                    figures=_figures(plots[sub.name], cols),
                    paper=[c.cells | {"verdict_only": c.verdict} for c in sub.paper],
                    paper_source=sub.paper[0].source if sub.paper else "",
                    paper_figure=next((p for p in plots[sub.name] if p.kind == "paper"), None),
                    consistency=consistency.summary(sub),
                    humans=consistency.human_summary(sub),
                    failed=failures([r for r in sub.rows if r["status"] != "ok"]),
                    **common,
                ),
            )
        )
    pages.append(
        _write(out / "compare.html", env.get_template("compare.html").render(root=".", **common))
    )
    static = out / "static"
    static.mkdir(exist_ok=True)
    for name in ASSETS:
        _write(
            static / name, resources.files(__package__).joinpath("static", name).read_text("utf-8")
        )
    data = compare_data(report, plots)
    _write(static / "data.js", "window.BIOPRIOR = " + _js_json(data) + ";\n")
    _write(
        out / "results.json", json.dumps(public_rows(rows), indent=1, sort_keys=True, default=str)
    )
    _write(out / "results.csv", results_csv(rows))
    _write(out / "leaderboard.csv", leaderboard_csv(board, report.columns))
    _write(out / "error_consistency.csv", consistency.as_csv(report))
    _write(
        out / "error_consistency.json",
        json.dumps(consistency.as_json(report), indent=1, sort_keys=True, default=str),
    )
    return Site(out, pages, plots, report)


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("bioprior.registry.report", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["flag_labels"] = FLAG_LABELS  # also seen by imported macros
    env.globals["lower_is_better"] = LOWER_IS_BETTER
    env.filters["stat"] = _stat_html
    env.filters["sortval"] = lambda s: (
        "" if not isinstance(s, Stat) or s.mean is None else f"{s.mean:.6g}"
    )
    env.filters["pretty"] = lambda v: (
        json.dumps(v, indent=1, sort_keys=True, default=str)
        if isinstance(v, (dict, list))
        else str(v)
    )
    return env


def _stat_html(s: Stat, digits: int = 3):
    """Mean, and the spread over seeds in a smaller span."""
    from markupsafe import Markup, escape

    if not isinstance(s, Stat) or s.mean is None:
        return "–"
    out = Markup('<span class="m">{}</span>').format(f"{s.mean:.{digits}f}")
    if s.std is not None:
        out += Markup('<span class="sd">±{}</span>').format(escape(f"{s.std:.{digits}f}"))
    return out


def _write(path: Path, text: str) -> Path:
    """Write atomically (a temp file beside it, then rename): a reader never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _js_json(data: Any) -> str:
    """``data`` as a JavaScript expression: ``JSON.parse`` of a string, so that a key such as
    ``__proto__`` is an own property (in an object literal it would set the prototype)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return "JSON.parse(" + json.dumps(text).replace("</", "<\\/") + ")"


# -- the leaderboard ------------------------------------------------------------------------------
def _cell(cell: Cell | None) -> dict[str, Any] | None:
    if cell is None:
        return None
    return {
        "score": cell.score,
        "seeds": {
            str(r["seed"]): r["score"] for r in cell.ok if number(r.get("score")) is not None
        },
        "metrics": [
            {"path": p, "label": lab, "stat": cell.metric(p), "lower": p in LOWER_IS_BETTER}
            for p, lab in cell.column.metrics
        ],
        "flags": cell.flags,
        "info": cell.info,
        "ok": len(cell.ok),
        "failed": len(cell.failed),
        "errors": cell.error_classes,
        "messages": sorted({r.get("error") or "" for r in cell.failed}),
        "notes": sorted({str(r["metrics"]["note"]) for r in cell.ok if r["metrics"].get("note")}),
    }


def leaderboard(report: Report) -> list[dict[str, Any]]:
    """One row per submission variant, ranked by the mean of its column scores."""
    rows = []
    for sub in report.submissions:
        for v in sub.variants:
            failed = v.failed
            rows.append(
                {
                    "submission": sub.name,
                    "slug": sub.slug,
                    "variant": v.label,
                    "values": v.values,
                    "seeds": v.seeds,
                    "overall": v.overall(),
                    "scored": sum(1 for c in v.cells.values() if c.score.mean is not None),
                    "cells": {c.id: _cell(v.cells.get(c.id)) for c in report.columns},
                    "failed": len(failed),
                    "errors": sorted({error_class(r) or "error" for r in failed}),
                }
            )
    rows.sort(key=lambda r: (r["overall"].mean is None, -(r["overall"].mean or 0)))
    for i, r in enumerate(rows, 1):
        r["rank"] = i if r["overall"].mean is not None else None
    return rows


def failures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "submission": r["submission"],
            "variant": ", ".join(
                f"{k.split('.')[-1]}={v}" for k, v in (r.get("variant") or {}).items()
            )
            or "default",
            "seed": r["seed"],
            "benchmark": r["benchmark"],
            "error_class": error_class(r),
            "error": r.get("error") or "",
            "finished_at": r.get("finished_at") or "",
        }
        for r in rows
    ]


# -- a submission -------------------------------------------------------------------------------
def spec_text(sub: Submission) -> dict[str, str]:
    """The submission as scored (from the stored job specs): model, constraints, recipe,
    dataset; the benchmarks with their parameters; seeds and sweep."""
    first = next((r for r in sub.rows if isinstance(r.get("spec"), dict)), None)
    training = dict((first or {}).get("spec", {}).get("training") or {})
    training.pop("seed", None)
    benchmarks = {}
    for r in sub.rows:
        b = (r.get("spec") or {}).get("benchmark") or {
            "name": r["benchmark"],
            "params": r.get("benchmark_params"),
        }
        benchmarks.setdefault(json.dumps(b, sort_keys=True, default=str), b)
    seeds = sorted({r["seed"] for r in sub.rows})
    sweep: dict[str, list] = {}
    for v in sub.variants:
        for k, x in v.values.items():
            sweep.setdefault(k, [])
            if x not in sweep[k]:
                sweep[k].append(x)

    def dump(obj):
        return yaml.safe_dump(json.loads(json.dumps(obj, default=str)), sort_keys=False, width=96)

    return {
        "training": dump(training) if training else "",
        "benchmarks": dump(list(benchmarks.values())),
        "run": dump({"seeds": seeds, "sweep": sweep, "variants": len(sub.variants)}),
    }


def provenance(sub: Submission) -> list[dict[str, Any]]:
    """Per variant and seed: device, versions, weights hashes, timings, and any provenance
    column the store has beyond the ones this report knows."""
    out = []
    for v in sub.variants:
        for seed in v.seeds:
            rows = [r for r in v.rows if r["seed"] == seed]
            weights: dict[str, str] = {}
            plugins: dict[str, str] = {}
            for r in rows:
                weights.update(r.get("weights") or {})
                plugins.update(r.get("plugin_versions") or {})
            extra: dict[str, Any] = {}
            for r in rows:
                for k, x in r.items():
                    if k not in KNOWN_COLUMNS and x not in (None, "", {}, []):
                        extra.setdefault(k, set()).add(
                            json.dumps(x, sort_keys=True, default=str)
                            if not isinstance(x, str)
                            else x
                        )
            out.append(
                {
                    "variant": v.label,
                    "seed": seed,
                    "device": ", ".join(sorted({r.get("device") or "?" for r in rows})),
                    "bioprior": ", ".join(
                        sorted({str(r.get("bioprior_version") or "?") for r in rows})
                    ),
                    "weights_hash": ", ".join(
                        sorted({r["weights_hash"] for r in rows if r.get("weights_hash")})
                    )
                    or "–",
                    "weights": weights,
                    "plugins": plugins,
                    "duration": sum(number(r.get("duration_s")) or 0 for r in rows),
                    "finished": max((r.get("finished_at") or "" for r in rows), default=""),
                    "benchmarks": ", ".join(
                        f"{r['benchmark']} {r.get('benchmark_version', '')}" for r in rows
                    ),
                    "extra": {k: ", ".join(sorted(x)) for k, x in extra.items()},
                }
            )
    return out


def _figures(plots: list[Plot], cols: list[Column]) -> list[dict[str, Any]]:
    groups = []
    for col in cols:
        figs = [p for p in plots if p.name.startswith(f"{col.id}-")]
        if figs:
            for p in figs:
                p.caption = " ".join(p.caption.split())
            groups.append({"column": col, "plots": figs})
    return groups


# -- data files -------------------------------------------------------------------------------------
def public_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The store's rows as they are (every column, JSON columns decoded), for results.json."""
    return [dict(r) for r in rows]


#: per-image results (packed bits): left to the JSON, never CSV columns
BULK = {"correct"}


def _flat(metrics: Any, prefix: str = "metrics") -> dict[str, Any]:
    """Scalar metrics flattened to dotted columns (lists, long tables and per-image results are
    left to the JSON)."""
    out: dict[str, Any] = {}
    if isinstance(metrics, dict):
        for k, v in metrics.items():
            if k not in BULK:
                out.update(_flat(v, f"{prefix}.{k}"))
    elif isinstance(metrics, (str, int, float, bool)) or metrics is None:
        out[prefix] = metrics
    return out


CSV_BASE = (
    "submission",
    "variant",
    "seed",
    "benchmark",
    "benchmark_version",
    "score",
    "status",
    "error_class",
    "error",
    "duration_s",
    "device",
    "weights_hash",
    "bioprior_version",
    "job_key",
    "training_key",
    "finished_at",
)


def results_csv(rows: list[dict[str, Any]]) -> str:
    """One line per store row: its columns, then every scalar metric as ``metrics.<path>``."""
    flats = [_flat(r.get("metrics") or {}) for r in rows]
    metric_cols = sorted({k for f in flats for k in f})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*CSV_BASE, *metric_cols])
    for r, f in zip(rows, flats, strict=True):
        base = []
        for c in CSV_BASE:
            x = error_class(r) if c == "error_class" else r.get(c)
            base.append(json.dumps(x, sort_keys=True) if isinstance(x, (dict, list)) else x)
        writer.writerow([*base, *(f.get(m) for m in metric_cols)])
    return buf.getvalue()


def leaderboard_csv(board: list[dict[str, Any]], columns: list[Column]) -> str:
    """The leaderboard as shown (means and standard deviations over seeds)."""
    head = ["rank", "submission", "variant", "seeds", "mean_score", "failed_jobs"]
    for c in columns:
        head += [f"{c.id}.score", f"{c.id}.score_std"]
        for p, _ in c.metrics:
            head += [f"{c.id}.{p}", f"{c.id}.{p}_std"]
        head.append(f"{c.id}.flags")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for r in board:
        line = [
            r["rank"],
            r["submission"],
            r["variant"],
            len(r["seeds"]),
            r["overall"].mean,
            r["failed"],
        ]
        for c in columns:
            cell = r["cells"][c.id]
            line += [cell["score"].mean, cell["score"].std] if cell else [None, None]
            for m in cell["metrics"] if cell else [{}] * len(c.metrics):
                line += [m["stat"].mean, m["stat"].std] if m else [None, None]
            line.append(";".join(cell["flags"]) if cell else None)
        writer.writerow(line)
    return buf.getvalue()


def _stat_json(s: Stat) -> dict[str, Any]:
    return {"mean": s.mean, "std": s.std, "n": s.n}


def compare_data(report: Report, plots: dict[str, list[Plot]]) -> dict:
    """What the compare page renders in the browser (embedded as a script: file:// pages cannot
    fetch JSON)."""
    subs = {}
    for sub in report.submissions:
        variants = []
        for v in sub.variants:
            cells = {}
            for cid, c in v.cells.items():
                cell = _cell(c)
                cells[cid] = {
                    "score": _stat_json(cell["score"]),
                    "metrics": {m["path"]: _stat_json(m["stat"]) for m in cell["metrics"]},
                    "flags": cell["flags"],
                    "failed": cell["failed"],
                    "errors": cell["errors"],
                }
            variants.append(
                {
                    "label": v.label,
                    "seeds": v.seeds,
                    "overall": _stat_json(v.overall()),
                    "cells": cells,
                }
            )
        subs[sub.name] = {
            "page": f"submissions/{sub.slug}.html",
            "variants": variants,
            "plots": [
                {"name": p.name, "title": p.title, "src": p.path, "kind": p.kind}
                for p in plots[sub.name]
            ],
        }
    columns = [
        {
            "id": c.id,
            "label": c.label,
            "family": c.family,
            "metrics": [
                {"path": p, "label": lab, "lower": p in LOWER_IS_BETTER} for p, lab in c.metrics
            ],
        }
        for c in report.columns
    ]
    return {"columns": columns, "submissions": subs, "order": [s.name for s in report.submissions]}


__all__ = ["ReportError", "Site", "build_report"]
