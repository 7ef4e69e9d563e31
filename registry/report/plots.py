"""The report's plots: matplotlib figures written as SVG, one function per kind of figure.

Each function takes a shaped submission (``data.Submission``) and one of its leaderboard columns
and returns the figure, or None when the metrics it needs are absent (older rows, a benchmark run
without that part, failed jobs). Every series is one variant (mean over seeds, spread shaded or
as error bars) and carries an SVG id ``series-<what>-v<index>`` so that it can be found in the
file. Nothing here imports torch, a plugin or a benchmark.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.text
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .data import Column, Stat, Submission, Variant, get_path, number, sweep_axis, value_text

RC = {
    "text.parse_math": False,  # every label is user text: a "$" is a dollar sign, not mathtext
    "svg.fonttype": "none",  # text stays text: smaller files, searchable labels
    "svg.hashsalt": "bioprior",  # stable ids: the same store gives the same files
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.prop_cycle": matplotlib.cycler(
        color=[
            "#2563eb",
            "#dc2626",
            "#059669",
            "#d97706",
            "#7c3aed",
            "#db2777",
            "#0891b2",
            "#65a30d",
            "#475569",
            "#ea580c",
        ]
    ),
}
COLORS = RC["axes.prop_cycle"].by_key()["color"]
MAX_PANELS = 24
# Key metrics that are not accuracies in [0, 1]: left out of the sweep plot's shared axis.
NOT_FRACTIONS = {"mce", "relative_mce", "median_minimal_l2", "median_minimal_linf"}


@dataclass
class Plot:
    """A written figure: ``path`` relative to the site root."""

    name: str
    title: str
    caption: str
    family: str
    path: str = ""
    kind: str = ""


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _figure(panels: int, cols: int = 3, w: float = 3.3, h: float = 2.6):
    cols = max(1, min(cols, panels))
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(w * cols, h * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, list(axes[:panels])


#: characters XML 1.0 does not allow (C0 controls but tab and newlines, surrogates, U+FFFE/F)
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def plain(text: str) -> str:
    """User text as a figure shows it: control characters as U+FFFD (an SVG stays well-formed)."""
    return NOT_XML.sub("\ufffd", text)


def save_svg(fig: Figure, path: Path) -> None:
    """Every text of ``fig`` as plain text (no mathtext, no control characters), then the SVG;
    what the figure draws late (tick labels) is cleaned in the written file too."""
    for text in fig.findobj(matplotlib.text.Text):
        text.set_parse_math(False)
        if NOT_XML.search(text.get_text()):
            text.set_text(plain(text.get_text()))
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plain(buf.getvalue()), encoding="utf-8")


def _curve(values: list[Any]) -> tuple[list[float], list[float]] | None:
    """Element-wise mean and sample std over seeds of equal-length numeric lists."""
    lists = [v for v in values if isinstance(v, list) and v]
    if not lists:
        return None
    n = len(lists[0])
    lists = [v for v in lists if len(v) == n]
    stats = [Stat.of(v[i] for v in lists) for i in range(n)]
    if all(s.mean is None for s in stats):
        return None
    mean = [s.mean if s.mean is not None else math.nan for s in stats]
    std = [s.std or 0.0 for s in stats]
    return mean, std


def _line(ax, x, mean, std, i: int, gid: str, label: str, style: str = "-", marker: str = "o"):
    (line,) = ax.plot(
        x, mean, style, color=color(i), marker=marker, ms=3, lw=1.5, label=label, gid=gid
    )
    if any(s > 0 for s in std):
        lo = [m - s for m, s in zip(mean, std, strict=True)]
        hi = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(x, lo, hi, color=color(i), alpha=0.15, lw=0)
    return line


def _ok(v: Variant, col: Column) -> list[dict[str, Any]]:
    cell = v.cells.get(col.id)
    return cell.ok if cell else []


def _legend(fig: Figure, axes, title: str | None = None) -> None:
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
    if handles:
        width = fig.get_figwidth()
        longest = max(len(x) for x in labels)
        per = max(1, int(width / (0.35 + 0.075 * longest)))
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(len(labels), per, 4),
            frameon=False,
            title=title,
        )


# -- memorization -------------------------------------------------------------------------------
def learning_curves(sub: Submission, col: Column, history) -> Figure | None:
    """Training accuracy per epoch on natural (solid) and random (dashed) data (tsvetkov2020
    Fig. 1), from the histories saved with the cached weights."""
    fig, (ax,) = _figure(1, w=5.2, h=3.2)
    drawn = 0
    for i, v in enumerate(sub.variants):
        natural, random = [], []
        for r in _ok(v, col):
            nat = history(r.get("training_key"))
            rnd = [history(k) for k in (r.get("weights") or {}) if k != r.get("training_key")]
            if nat and nat.get("accuracy"):
                natural.append(nat["accuracy"])
            random += [h["accuracy"] for h in rnd if h and h.get("accuracy")]
        for kind, curves, style in (("natural", natural, "-"), ("random", random, "--")):
            stat = _curve(curves)
            if stat:
                x = list(range(1, len(stat[0]) + 1))
                _line(ax, x, *stat, i, f"series-{kind}-v{i}", f"{v.label} · {kind}", style, "")
                drawn += 1
    if not drawn:
        return None
    ax.set(xlabel="epoch", ylabel="training accuracy", ylim=(0, 1.02))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("natural (solid) vs random (dashed) data")
    _legend(fig, [ax])
    return fig


def sweep_plot(sub: Submission, col: Column) -> Figure | None:
    """Mean over seeds (bars: standard deviation) of the score and the key accuracies against
    the swept parameter; for memorization, tsvetkov2020's main figure: accuracy on natural test
    and random training data against the noise sigma."""
    axis = sweep_axis(sub)
    if axis is None:
        return None
    metrics = [m for m in col.metrics if m[0] not in NOT_FRACTIONS] + [("score", "score")]
    if col.benchmark == "memorization":
        metrics = [m for m in col.metrics if m[0] in ("natural_test_acc", "random_train_acc")]
    others = [k for k in sub.sweep_keys if k != axis]
    groups: dict[str, list[Variant]] = {}
    for v in sub.variants:
        groups.setdefault(
            ", ".join(f"{sub.sweep_keys[k]}={value_text(v.values.get(k))}" for k in others), []
        ).append(v)
    fig, (ax,) = _figure(1, w=5.2, h=3.2)
    k = 0
    for g, (glabel, vs) in enumerate(groups.items()):
        vs = sorted(vs, key=lambda v: number(v.values.get(axis)))
        for path, label in metrics:
            pts = []
            for v in vs:
                rows = _ok(v, col)
                values = [
                    r["score"] if path == "score" else get_path(r["metrics"], path) for r in rows
                ]
                s = Stat.of(values)
                if s.mean is not None:
                    pts.append((number(v.values[axis]), s.mean, s.std or 0.0))
            if not pts:
                continue
            x, y, e = zip(*pts, strict=True)
            name = label + (f" ({glabel})" if glabel else "")
            bars = ax.errorbar(
                x,
                y,
                yerr=e,
                color=color(k),
                marker="o",
                ms=4,
                lw=1.5,
                capsize=3,
                label=name,
                ls="-" if g == 0 else "--",
            )
            bars.lines[0].set_gid(f"series-{path}-g{g}")  # the data line, not the caps
            k += 1
    if not k:
        return None
    ax.set(xlabel=sub.sweep_keys[axis], ylabel="accuracy / score", ylim=(0, 1.02))
    ax.set_title(f"{col.label} against {sub.sweep_keys[axis]}")
    _legend(fig, [ax])
    return fig


def capacity_plot(sub: Submission, col: Column) -> Figure | None:
    """tsvetkov2020 Exp. 2: natural and random training accuracy per classes x examples."""
    panels = [v for v in sub.variants if any(get_path(r["metrics"], "cells") for r in _ok(v, col))]
    if not panels:
        return None
    fig, axes = _figure(len(panels[:MAX_PANELS]))
    for ax, v in zip(axes, panels, strict=False):
        cells: dict[tuple[int, int], list[dict]] = {}
        for r in _ok(v, col):
            for c in r["metrics"].get("cells") or []:
                cells.setdefault((c["classes"], c["examples_per_class"]), []).append(c)
        for j, k in enumerate(sorted({c[0] for c in cells})):
            ns = sorted(n for kk, n in cells if kk == k)
            for kind, style in (("natural_train_acc", "-"), ("random_train_acc", "--")):
                ys = [Stat.of(c[kind] for c in cells[(k, n)]).mean for n in ns]
                ax.plot(
                    ns,
                    ys,
                    style,
                    color=color(j),
                    marker="o",
                    ms=3,
                    label=f"{k} classes",
                    gid=f"series-{kind}-k{k}",
                )
        ax.set(
            xscale="log", xlabel="examples per class", ylabel="training accuracy", ylim=(0, 1.02)
        )
        ax.set_title(v.label)
    _legend(fig, axes, "natural (solid) / random (dashed)")
    return fig


# -- corruption ---------------------------------------------------------------------------------
def _levels(table: dict[str, Any]) -> list[str]:
    """Severity / level keys ("1", "0.05", ...) in numeric order, non-numeric ones last."""
    return sorted(table, key=lambda s: (_float(s) is None, _float(s) or 0.0, s))


def _float(s: str) -> float | None:
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def corruption_severity(sub: Submission, col: Column) -> Figure | None:
    """Accuracy against severity per corruption (and against the level of each noise sweep),
    clean accuracy at 0; the baseline (the same network without constraints) dashed grey."""
    names: list[str] = []
    for v in sub.variants:
        for r in _ok(v, col):
            for name in get_path(r["metrics"], "accuracy") or {}:
                if name not in names and name not in ("identity", "upsampling_round_trip"):
                    names.append(name)
    if not names:
        return None
    names = names[:MAX_PANELS]
    fig, axes = _figure(len(names), cols=4, w=2.7, h=2.3)
    for ax, name in zip(axes, names, strict=True):
        noise = name in ("gaussian_noise_std", "uniform_noise", "salt_and_pepper")
        for i, v in enumerate(sub.variants):
            rows = [r for r in _ok(v, col) if name in (get_path(r["metrics"], "accuracy") or {})]
            if not rows:
                continue
            levels = _levels(rows[0]["metrics"]["accuracy"][name])
            x = [_float(s) for s in levels]
            ys = [[r["metrics"]["accuracy"][name].get(s) for s in levels] for r in rows]
            if not noise and 0.0 not in x:  # severity 0: clean accuracy
                x = [0.0, *x]
                ys = [[r["metrics"].get("clean_acc"), *y] for r, y in zip(rows, ys, strict=True)]
            stat = _curve(ys)
            if stat:
                _line(ax, x, *stat, i, f"series-{slug_name(name)}-v{i}", v.label)
            if i == 0:
                base = [get_path(r["metrics"], f"baseline.accuracy.{name}") for r in rows]
                if all(isinstance(b, dict) for b in base) and base:
                    by = [[b.get(s) for s in levels] for b in base]
                    if len(x) > len(levels):
                        by = [
                            [get_path(r["metrics"], "baseline.clean_acc"), *y]
                            for r, y in zip(rows, by, strict=True)
                        ]
                    bstat = _curve(by)
                    if bstat:
                        ax.plot(x, bstat[0], "--", color="#94a3b8", lw=1.2, label="baseline")
        ax.set_title(name.replace("_", " "))
        ax.set(ylim=(0, 1.02), xlabel="level" if noise else "severity", ylabel="accuracy")
    _legend(fig, axes)
    return fig


def slug_name(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def corruption_mce(sub: Submission, col: Column) -> Figure | None:
    """mCE and relative mCE (Hendrycks & Dietterich 2019) per variant, against the baseline (1)."""
    keys = [("mce", "mCE"), ("relative_mce", "relative mCE")]
    have = [
        (k, lab)
        for k, lab in keys
        if any(number(r["metrics"].get(k)) is not None for v in sub.variants for r in _ok(v, col))
    ]
    if not have:
        return None
    fig, (ax,) = _figure(1, w=5.2, h=3.0)
    width = 0.8 / len(sub.variants)
    for i, v in enumerate(sub.variants):
        stats = [Stat.of(r["metrics"].get(k) for r in _ok(v, col)) for k, _ in have]
        xs = [j + (i - (len(sub.variants) - 1) / 2) * width for j in range(len(have))]
        ax.bar(
            xs,
            [s.mean if s.mean is not None else 0 for s in stats],
            width * 0.9,
            yerr=[s.std or 0 for s in stats],
            color=color(i),
            label=v.label,
            capsize=2,
            gid=f"series-mce-v{i}",
        )
    ax.axhline(1.0, color="#64748b", ls="--", lw=1, label="baseline = 1")
    ax.set_xticks(range(len(have)), [lab for _, lab in have])
    ax.set(ylabel="error relative to baseline (lower is better)")
    ax.set_title("mean corruption error")
    _legend(fig, [ax])
    return fig


# -- adversarial --------------------------------------------------------------------------------
def adversarial_curves(sub: Submission, col: Column) -> Figure | None:
    """Robust accuracy against epsilon per attack curve: white box (solid), EOT on the
    stochastic model (dotted) and black-box transfer from the surrogate (dashed, score curve)."""
    labels: list[str] = []
    for v in sub.variants:
        for r in _ok(v, col):
            for mode in (get_path(r["metrics"], "modes") or {}).values():
                labels += [c for c in mode.get("curves") or {} if c not in labels]
    if not labels:
        return None
    # this submission's parameters of the benchmark (another may share the column with others)
    params = next((r.get("benchmark_params") for v in sub.variants for r in _ok(v, col)), None)
    params = params or {}
    score_curve = params.get("score_curve")
    fig, axes = _figure(len(labels[:MAX_PANELS]))
    for ax, label in zip(axes, labels, strict=False):
        for i, v in enumerate(sub.variants):
            rows = _ok(v, col)
            for mode, style, marker, name in (
                ("deterministic", "-", "o", "white box"),
                ("stochastic", ":", "s", "white box, EOT"),
            ):
                curves = [get_path(r["metrics"], f"modes.{mode}.curves.{label}") for r in rows]
                series = (f"series-{label}-{mode}-v{i}", f"{v.label} · {name}", style, marker)
                _accuracy_curve(ax, curves, i, *series)
            if label == score_curve:
                mode = _attack_mode(rows)
                tr = [get_path(r["metrics"], f"modes.{mode}.transfer") for r in rows]
                series = (f"series-{label}-transfer-v{i}", f"{v.label} · black box", "--", "^")
                _accuracy_curve(ax, tr, i, *series)
        unit = params.get("epsilon_space", "pixel")
        ax.set(xlabel=f"epsilon ({unit})", ylabel="accuracy", ylim=(0, 1.02))
        ax.set_title(label)
    _legend(fig, axes)
    return fig


def _attack_mode(rows) -> str:
    """The attack mode a variant's rows report on: stochastic (EOT) where they have it."""
    stochastic = any(get_path(r["metrics"], "modes.stochastic") for r in rows)
    return "stochastic" if stochastic else "deterministic"


def _accuracy_curve(ax, curves, i, series, label, style, marker) -> None:
    """Mean ± std over seeds of the accuracy-vs-epsilon ``curves`` found (one per seed)."""
    curves = [c for c in curves if c]
    stat = _curve([c.get("accuracy") for c in curves])
    if stat:
        _line(ax, curves[0]["epsilons"], *stat, i, series, label, style, marker)


def adversarial_minimal(sub: Submission, col: Column) -> Figure | None:
    """Minimal adversarial perturbations (li2019 Sec. 4.2, smallest over the attacks per image):
    per norm and variant, each seed's median over images (dots; the bar is their mean), or the
    per-image distances as histograms when the store has them."""
    norms = ["linf", "l2", "l1", "l0"]

    def medians(v, norm):
        rows = _ok(v, col)
        m = _attack_mode(rows)
        out = [get_path(r["metrics"], f"modes.{m}.minimal.norms.{norm}.median") for r in rows]
        return [x for x in map(number, out) if x is not None]

    def per_image(v, norm):
        rows = _ok(v, col)
        m = _attack_mode(rows)
        vals = [get_path(r["metrics"], f"modes.{m}.minimal.norms.{norm}.values") for r in rows]
        return [x for p in vals if isinstance(p, list) for x in map(number, p) if x is not None]

    present = [n for n in norms if any(medians(v, n) for v in sub.variants)]
    if not present:
        return None
    fig, axes = _figure(len(present), cols=4, w=2.5, h=2.5)
    names = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}
    for ax, norm in zip(axes, present, strict=True):
        hist = any(per_image(v, norm) for v in sub.variants)
        for i, v in enumerate(sub.variants):
            if hist:
                ax.hist(
                    per_image(v, norm),
                    bins=20,
                    histtype="step",
                    color=color(i),
                    label=v.label,
                    gid=f"series-minimal-{norm}-v{i}",
                )
                continue
            med = medians(v, norm)
            if med:
                ax.bar([i], [sum(med) / len(med)], 0.6, color=color(i), alpha=0.25)
                ax.plot(
                    [i] * len(med),
                    med,
                    "o",
                    color=color(i),
                    ms=5,
                    label=v.label,
                    gid=f"series-minimal-{norm}-v{i}",
                )
        if hist:
            ax.set(xlabel=f"minimal {names[norm]} distance", ylabel="images")
        else:
            ax.set_xticks(
                range(len(sub.variants)),
                [v.label for v in sub.variants],
                rotation=20 if len(sub.variants) > 2 else 0,
                ha="right" if len(sub.variants) > 2 else "center",
            )
            ax.set(ylabel="median distance (per seed)")
            ax.set_xlim(-0.6, len(sub.variants) - 0.4)
        ax.set_title(names[norm])
    _legend(fig, axes)
    return fig


# -- spectral -----------------------------------------------------------------------------------
def spectral_curves(sub: Submission, col: Column) -> Figure | None:
    """Accuracy under Gaussian band-pass filters (evanson Fig. 5C) and ideal low- / high-pass
    filters, against frequency in cycles per image; clean accuracy dotted."""
    parts = [
        ("bandpass", "centres", "band-pass centre (cycles / image)"),
        ("lowpass", "cycles", "low-pass cutoff (cycles / image)"),
        ("highpass", "cycles", "high-pass cutoff (cycles / image)"),
    ]
    parts = [
        p
        for p in parts
        if any(
            get_path(r["metrics"], f"{p[0]}.accuracy") for v in sub.variants for r in _ok(v, col)
        )
    ]
    if not parts:
        return None
    fig, axes = _figure(len(parts))
    for ax, (part, xkey, xlabel) in zip(axes, parts, strict=True):
        for i, v in enumerate(sub.variants):
            rows = [r for r in _ok(v, col) if get_path(r["metrics"], f"{part}.accuracy")]
            stat = _curve([r["metrics"][part]["accuracy"] for r in rows])
            if stat:
                _line(ax, rows[0]["metrics"][part][xkey], *stat, i, f"series-{part}-v{i}", v.label)
                clean = Stat.of(r["metrics"].get("clean_acc") for r in rows).mean
                if clean is not None:
                    ax.axhline(clean, color=color(i), ls=":", lw=1)
        ax.set(xlabel=xlabel, ylabel="accuracy", ylim=(0, 1.02))
        ax.set_title(part.replace("pass", "-pass"))
    _legend(fig, axes)
    return fig


def fourier_heatmap(sub: Submission, col: Column) -> Figure | None:
    """Yin et al. (2019): error rate under additive Fourier-basis noise per frequency, mean over
    seeds, one map per variant."""
    maps = []
    for i, v in enumerate(sub.variants):
        hm = [get_path(r["metrics"], "fourier_heatmap") for r in _ok(v, col)]
        hm = [h for h in hm if h and h.get("error")]
        if not hm:
            continue
        grids = [h["error"] for h in hm if len(h["error"]) == len(hm[0]["error"])]
        n = len(grids[0])
        mean = [[Stat.of(g[a][b] for g in grids).mean for b in range(n)] for a in range(n)]
        maps.append((i, v, hm[0]["frequencies"], mean))
    if not maps:
        return None
    maps = maps[:MAX_PANELS]
    top = max((x for _, _, _, g in maps for row in g for x in row if x is not None), default=1)
    fig, axes = _figure(len(maps), cols=4, w=2.6, h=2.4)
    for ax, (i, v, freqs, grid) in zip(axes, maps, strict=True):
        step = (freqs[1] - freqs[0]) if len(freqs) > 1 else 1
        ext = (freqs[0] - step / 2, freqs[-1] + step / 2) * 2
        im = ax.imshow(
            grid,
            origin="lower",
            extent=ext,
            vmin=0,
            vmax=max(top, 1e-6),
            cmap="magma",
            gid=f"series-heatmap-v{i}",
        )
        ax.set_title(v.label)
        ax.set(xlabel="horizontal freq.", ylabel="vertical freq.")
        ax.grid(False)
    fig.colorbar(im, ax=axes, label="error rate", shrink=0.9)
    return fig


# -- OOD and neural predictivity ------------------------------------------------------------------
def _bars(
    sub: Submission,
    col: Column,
    values: Callable[[dict], dict[str, Any]],
    ylabel: str,
    title: str,
    gid: str,
    hline: float | None = None,
) -> Figure | None:
    names: list[str] = []
    for v in sub.variants:
        for r in _ok(v, col):
            names += [
                k
                for k, x in values(r["metrics"]).items()
                if number(x) is not None and k not in names
            ]
    if not names:
        return None
    fig, (ax,) = _figure(
        1, w=max(4.0, 0.55 * len(names) * max(1, len(sub.variants) / 2) + 2), h=3.0
    )
    width = 0.8 / len(sub.variants)
    for i, v in enumerate(sub.variants):
        stats = [Stat.of(values(r["metrics"]).get(n) for r in _ok(v, col)) for n in names]
        xs = [j + (i - (len(sub.variants) - 1) / 2) * width for j in range(len(names))]
        ax.bar(
            xs,
            [s.mean or 0 for s in stats],
            width * 0.9,
            yerr=[s.std or 0 for s in stats],
            color=color(i),
            label=v.label,
            capsize=2,
            gid=f"{gid}-v{i}",
        )
    if hline is not None:
        ax.axhline(hline, color="#64748b", ls="--", lw=1, label="chance")
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], rotation=20, ha="right")
    ax.set(ylabel=ylabel)
    ax.set_title(title)
    _legend(fig, [ax])
    return fig


def ood_bars(sub: Submission, col: Column) -> Figure | None:
    """Accuracy per stylized rendering (evanson Fig. 6) and external set."""

    def values(m):
        out = {"clean": m.get("clean_acc"), **(m.get("accuracy") or {})}
        out.update({k: e.get("accuracy") for k, e in (m.get("external") or {}).items()})
        return out

    chance = [r["metrics"].get("chance") for v in sub.variants for r in _ok(v, col)]
    return _bars(
        sub,
        col,
        values,
        "accuracy",
        "accuracy per rendering",
        "series-ood",
        next((c for c in chance if number(c) is not None), None),
    )


def neural_bars(sub: Submission, col: Column) -> Figure | None:
    """Neural predictivity (safarani2021): FEVE and correlation of the co-trained readout."""
    return _bars(
        sub,
        col,
        lambda m: {k: m.get(k) for k in ("feve", "fev", "correlation")},
        "value",
        "held-out neural predictivity",
        "series-neural",
    )


# -- error consistency ----------------------------------------------------------------------------
def error_consistency(sub: Submission, col: Column) -> Figure | None:
    """Error consistency (Cohen's kappa on which images each got right, Geirhos, Meding &
    Wichmann 2020) of each variant with its unconstrained baseline per condition, mean over
    seeds (shaded or bars: standard deviation); 0 (dashed) is the agreement the two accuracies
    alone predict, 1 the same errors. A variant that is its own baseline is left out."""
    pairs = [p for p in sub.consistency if p.column.id == col.id and p.conditions and not p.itself]
    if not pairs:
        return None
    levels_of: dict[str, set[str]] = {}
    for p in pairs:
        for c in p.conditions:
            if len(c.path) > 1:
                levels_of.setdefault(c.path[0], set()).add(" ".join(c.path[1:]))

    def place(path: tuple[str, ...]) -> tuple[str, str]:
        """(panel, level): a name with several levels is a panel, the rest share one."""
        if len(path) > 1 and len(levels_of[path[0]]) > 1:
            return path[0], " ".join(path[1:])
        return "", " ".join(path)

    groups: dict[str, list[str]] = {}  # panel -> levels, in stored order
    for p in pairs:
        for c in p.conditions:
            panel, level = place(c.path)
            found = groups.setdefault(panel, [])
            if level not in found:
                found.append(level)
    panels = sorted(groups, key=lambda g: g != "")[:MAX_PANELS]  # the shared panel first
    fig, axes = _figure(len(panels), cols=4, w=2.7, h=2.3)
    variants = [v for v in sub.variants if any(p.variant is v for p in pairs)]
    low = -0.2
    for ax, panel in zip(axes, panels, strict=True):
        levels = groups[panel]
        numeric = bool(panel) and all(_float(x) is not None for x in levels)
        order = sorted(levels, key=lambda x: _float(x) or 0.0) if numeric else levels
        xs = [_float(x) or 0.0 for x in order] if numeric else [float(j) for j in range(len(order))]
        for i, v in enumerate(sub.variants):
            if v not in variants:
                continue
            per_seed = [
                {place(c.path): c.kappa for c in p.conditions} for p in pairs if p.variant is v
            ]
            stats = [Stat.of(k.get((panel, x)) for k in per_seed) for x in order]
            pts = [(x, s) for x, s in zip(xs, stats, strict=True) if s.mean is not None]
            if not pts:
                continue
            low = min(low, min(s.mean - (s.std or 0.0) for _, s in pts) - 0.05)
            gid = f"series-consistency-{slug_name(panel or 'conditions')}-v{i}"
            if numeric and len(pts) > 1:
                _line(
                    ax,
                    [x for x, _ in pts],
                    [s.mean for _, s in pts],
                    [s.std or 0.0 for _, s in pts],
                    i,
                    gid,
                    v.label,
                )
            else:
                shift = 0.0 if numeric else (i - (len(variants) - 1) / 2) * 0.1
                bars = ax.errorbar(
                    [x + shift for x, _ in pts],
                    [s.mean for _, s in pts],
                    yerr=[s.std or 0.0 for _, s in pts],
                    fmt="o",
                    ms=4,
                    capsize=2,
                    color=color(i),
                    label=v.label,
                )
                bars.lines[0].set_gid(gid)
        ax.axhline(0.0, color="#64748b", ls="--", lw=1)
        if not numeric:
            long = len(order) > 3 or max(len(x) for x in order) > 8
            ax.set_xticks(
                xs,
                [x.replace("_", " ") for x in order],
                rotation=30 if long else 0,
                ha="right" if long else "center",
            )
            ax.set_xlim(-0.6, len(order) - 0.4)
        ax.set_title((panel or "conditions").replace("_", " "))
        ax.set(ylabel="error consistency (κ)", xlabel="level" if numeric else "")
    for ax in axes:
        ax.set_ylim(low, 1.05)
    _legend(fig, axes)
    return fig


# -- the paper beside the measurement ----------------------------------------------------------------
def paper_plot(sub: Submission) -> Figure | None:
    """The paper's number (open square, bars: its SEM) beside the measured mean over seeds
    (filled circle, bars: SEM over seeds) of each variant, one panel per metric (the
    submission's ``reference:``); a difference entry is one variant minus another."""
    panels: dict[str, list] = {}
    for c in sub.paper:
        panels.setdefault(c.metric_label + (" (difference)" if c.minus else ""), []).append(c)
    if not panels:
        return None
    widest = max(len(cs) for cs in panels.values())
    fig, axes = _figure(len(panels), cols=2, w=max(3.3, 0.9 * widest + 1.6), h=2.9)
    for j, (ax, (title, cs)) in enumerate(zip(axes, panels.items(), strict=True)):
        xs = list(range(len(cs)))
        ax.errorbar(
            [x - 0.12 for x in xs],
            [c.entry.value for c in cs],
            yerr=[c.paper_sem or 0.0 for c in cs],
            fmt="s",
            mfc="white",
            color=color(1),
            capsize=3,
            ms=5,
            label="paper",
            gid=f"series-paper-m{j}",
        )
        done = [(x, c) for x, c in zip(xs, cs, strict=True) if c.mean is not None]
        if done:
            ax.errorbar(
                [x + 0.12 for x, _ in done],
                [c.mean for _, c in done],
                yerr=[c.sem or 0.0 for _, c in done],
                fmt="o",
                color=color(0),
                capsize=3,
                ms=5,
                label="measured (bioprior)",
                gid=f"series-measured-m{j}",
            )
        labels = [c.variant_label for c in cs]
        long = max(len(x) for x in labels) > 14
        ax.set_xticks(xs, labels, rotation=25 if long else 0, ha="right" if long else "center")
        ax.set_xlim(-0.6, len(cs) - 0.4)
        ax.set_title(title)
    _legend(fig, axes)
    return fig


def paper_plots(sub: Submission, out: Path) -> list[Plot]:
    """The paper-vs-measured figure of one submission with a reference, written under
    ``out/plots/<slug>/paper.svg``; none without one."""
    with matplotlib.rc_context(RC):
        fig = paper_plot(sub)
        if fig is None:
            return []
        source = sub.paper[0].source
        fig.suptitle(f"{sub.name} · {source}", fontsize=9, color="#334155")
        rel = f"plots/{sub.slug}/paper.svg"
        save_svg(fig, out / rel)
    caption = " ".join((paper_plot.__doc__ or "").split())
    return [Plot("paper", "Paper vs measured", caption, "reference", rel, "paper")]


# -- the figures of a submission ------------------------------------------------------------------
EC_TITLE = "Error consistency with the unconstrained baseline"
PLOTS: dict[str, list[tuple[str, str, Callable]]] = {
    "memorization": [
        ("learning", "Learning curves", learning_curves),
        ("sweep", "Natural vs random data against constraint strength", sweep_plot),
    ],
    "memorization_capacity": [("capacity", "Capacity: classes x examples", capacity_plot)],
    "corruption": [
        ("severity", "Accuracy vs severity per corruption", corruption_severity),
        ("mce", "mCE and relative mCE", corruption_mce),
        ("consistency", EC_TITLE, error_consistency),
        ("sweep", "Against constraint strength", sweep_plot),
    ],
    "adversarial": [
        ("epsilon", "Accuracy vs epsilon", adversarial_curves),
        ("minimal", "Minimal perturbations", adversarial_minimal),
        ("sweep", "Against constraint strength", sweep_plot),
    ],
    "spectral": [
        ("bands", "Band-pass, low-pass and high-pass accuracy", spectral_curves),
        ("heatmap", "Fourier heat map", fourier_heatmap),
        ("consistency", EC_TITLE, error_consistency),
        ("sweep", "Against constraint strength", sweep_plot),
    ],
    "ood_stylized": [
        ("styles", "Accuracy per stylized rendering", ood_bars),
        ("consistency", EC_TITLE, error_consistency),
        ("sweep", "Against constraint strength", sweep_plot),
    ],
    "neural_predictivity": [
        ("neural", "Neural predictivity", neural_bars),
        ("sweep", "Against constraint strength", sweep_plot),
    ],
}
GENERIC = [
    ("consistency", EC_TITLE, error_consistency),  # a third-party benchmark that stores `correct`
    ("sweep", "Against constraint strength", sweep_plot),
]


def submission_plots(sub: Submission, columns: list[Column], out: Path, history) -> list[Plot]:
    """Write every figure of one submission under ``out/plots/<slug>/``; returns what was drawn."""
    plots = []
    with matplotlib.rc_context(RC):
        for col in columns:
            if not any(v.cells.get(col.id) and v.cells[col.id].ok for v in sub.variants):
                continue
            for kind, title, fn in PLOTS.get(col.benchmark, GENERIC):
                fig = fn(sub, col, history) if fn is learning_curves else fn(sub, col)
                if fig is None:
                    continue
                fig.suptitle(f"{sub.name} · {col.label}", fontsize=9, color="#334155")
                rel = f"plots/{sub.slug}/{col.id}-{kind}.svg"
                save_svg(fig, out / rel)
                plots.append(
                    Plot(
                        f"{col.id}-{kind}", title, (fn.__doc__ or "").strip(), col.family, rel, kind
                    )
                )
    return plots
