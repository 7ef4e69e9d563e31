"""Implementation of the ``ood_stylized`` benchmark (see ``ood_stylized.py`` for definitions):
procedural renderings as stimulus-set transforms (numpy / scikit-image / scipy; they run in
worker processes) and external ImageFolder sets (torch imported inside the functions)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from bioprior.benchmarks.stimuli import (
    Condition,
    StimulusSet,
    evaluate,
    image_rng,
    packed_tree,
    predictions,
    to_uint8,
)

from . import humans

TRANSFORM = "bioprior.benchmarks.ood_stylized.renderings:transform"
VERSION = "1"
STYLES = ("edges", "contours", "line_drawing", "silhouette", "phase_scrambled", "amplitude_swapped")
LUMA = np.array([0.299, 0.587, 0.114])
IMAGE_SUFFIXES = humans.IMAGE_SUFFIXES


def _gray(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float64) / 255.0
    return np.tensordot(LUMA, x, axes=(0, 0)) if x.shape[0] == 3 else x[0]


def _resize(g: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(np.float32(g), mode="F")
    return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float64)


def dark_background(g: np.ndarray) -> bool:
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    return bool(np.median(border) < 0.5)


def foreground(g: np.ndarray, dark_bg: bool) -> np.ndarray:
    """Otsu threshold, on the side away from the background, holes filled."""
    from scipy.ndimage import binary_fill_holes
    from skimage.filters import threshold_otsu

    t = threshold_otsu(g) if g.max() > g.min() else g.max()
    fg = g > t if dark_bg else g < t
    return binary_fill_holes(fg)


def xdog(g: np.ndarray, sigma: float, k: float = 1.6, tau: float = 0.98, phi: float = 200.0):
    """Winnemöller et al. (2012) XDoG on an image with dark objects on light: line mask
    (threshold eps = -0.5 x the std of the DoG response)."""
    from skimage.filters import gaussian

    d = gaussian(g, sigma) - tau * gaussian(g, k * sigma)
    eps = -0.5 * float(d.std())
    soft = np.where(d >= eps, 1.0, 1.0 + np.tanh(phi * (d - eps)))
    return soft < 0.5


def render(img: np.ndarray, style: str, p: dict, rng: np.random.Generator, partner=None):
    """One uint8 image (C, H, W) rendered in ``style``; returns float (C, H, W) in [0, 1]."""
    from scipy import ndimage
    from skimage.feature import canny

    c, h, w = img.shape
    if style == "phase_scrambled":
        x = img.astype(np.float64) / 255.0
        f = np.fft.fft2(x, axes=(-2, -1))
        noise = np.angle(np.fft.fft2(rng.random((h, w))))
        y = np.fft.ifft2(np.abs(f) * np.exp(1j * (np.angle(f) + p["strength"] * noise)))
        return np.clip(y.real, 0, 1)
    if style == "amplitude_swapped":
        x = img.astype(np.float64) / 255.0
        f = np.fft.fft2(x, axes=(-2, -1))
        fa = np.fft.fft2(partner.astype(np.float64) / 255.0, axes=(-2, -1))
        return np.clip(np.fft.ifft2(np.abs(fa) * np.exp(1j * np.angle(f))).real, 0, 1)
    size = max(h, p["render_size"])
    g = _resize(_gray(img), size)
    dark_bg = dark_background(g)
    if style == "edges":
        mask = canny(g, sigma=p["canny_sigma"] * size / 64)
    elif style == "silhouette":
        mask = foreground(g, dark_bg)
    elif style == "contours":
        fg = foreground(g, dark_bg)
        # scikit-image's binary_erosion (removed in 0.28): a cross, outside counted as foreground
        cross = ndimage.generate_binary_structure(2, 1)
        mask = fg & ~ndimage.binary_erosion(fg, structure=cross, border_value=1)
    elif style == "line_drawing":
        mask = xdog(1 - g if dark_bg else g, p["xdog_sigma"] * size / 64)
    else:
        raise ValueError(f"unknown style {style!r}")
    light_ink = {"dataset": dark_bg, "light_on_dark": True, "dark_on_light": False}[p["polarity"]]
    out = np.where(mask, 1.0, 0.0) if light_ink else np.where(mask, 0.0, 1.0)
    out = np.clip(_resize(out, h), 0, 1)
    return np.broadcast_to(out, (c, h, w))


def transform(images: np.ndarray, condition: Condition, seed: int, start: int) -> np.ndarray:
    p = dict(condition.params)
    n = len(images)
    out = np.empty_like(images)
    for i in range(n):
        rng = image_rng(seed, condition, start + i)
        partner = images[(i + n // 2) % n] if condition.name == "amplitude_swapped" else None
        y = render(images[i], condition.name, p, rng, partner)
        out[i] = np.uint8(np.clip(np.rint(y * 255.0), 0, 255))
    return out


def conditions(p) -> list[Condition]:
    extra = (
        ("canny_sigma", p.canny_sigma),
        ("polarity", p.polarity),
        ("render_size", p.render_size),
        ("strength", p.phase_strength),
        ("xdog_sigma", p.xdog_sigma),
    )
    return [Condition("rendering", s, 0, extra) for s in p.styles]


# -- external sets ---------------------------------------------------------------------------
def missing_message(ext, path: Path) -> str:
    where = {
        "evans2022": "the stimuli of Evans, Malhotra & Bowers (2022), 'Biological convolutions "
        "improve DNN robustness to noise and generalisation' (see the paper's data availability "
        "statement; CIFAR-10 classes: contours, line drawings, silhouettes)",
        "model_vs_human": "model-vs-human (Geirhos et al. 2021, "
        "https://github.com/bethgelab/model-vs-human: its datasets, e.g. sketch, stylized, edge, "
        "silhouette, cue-conflict; 16 ImageNet classes)",
        "folder": "any ImageFolder dataset",
    }[ext.source]
    return (
        f"external set {ext.name!r} not found at {path}. Get it from {where}, and lay it out as "
        f"{path}/<class name>/<image>.png (one folder per class; cue-conflict images named "
        "<shape class><n>-<texture class><m>.png). Map its class names onto the model's classes "
        "with class_map if they differ."
    )


def load_folder(path: Path, channels: int, size: int):
    """ImageFolder layout -> (images uint8 N, C, H, W fitted, class names, file names), classes
    and files in sorted order."""
    import torch
    from PIL import Image

    from bioprior.plugin import fit_images

    images, classes, names = [], [], []
    for cls, f in humans.list_images(path):
        with Image.open(f) as im:
            a = np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.float32)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        t = fit_images(torch.from_numpy(a / 255.0)[None], channels, size)
        images.append(to_uint8(t)[0])
        classes.append(cls)
        names.append(f.name)
    if not images:
        raise ValueError(f"no images under {path}/<class>/")
    return np.stack(images), classes, names


def class_targets(ext, folder_classes: list[str], model_classes: tuple[str, ...], k: int):
    """External class -> indices of the model's classes (by class_map, else by equal names)."""
    names = {str(c): i for i, c in enumerate(model_classes)} if model_classes else {}
    names.update({str(i): i for i in range(k)} if not model_classes else {})

    def index(v) -> int:
        if isinstance(v, int) and 0 <= v < k:
            return v
        if str(v) in names:
            return names[str(v)]
        raise ValueError(f"{ext.name}: class_map value {v!r} is not one of the model's classes")

    targets: dict[str, list[int]] = {}
    for c in sorted(set(folder_classes)):
        if ext.class_map is not None:
            if c not in ext.class_map:
                continue
            v = ext.class_map[c]
            targets[c] = [index(x) for x in (v if isinstance(v, list) else [v])]
        elif c in names:
            targets[c] = [names[c]]
    if not targets:
        raise ValueError(
            f"{ext.name}: none of its classes {sorted(set(folder_classes))[:10]} maps onto the "
            f"model's classes {list(model_classes)[:10]}; give class_map"
        )
    return targets


def texture_class(stem: str) -> str | None:
    if "-" not in stem:
        return None
    return re.sub(r"\d+$", "", stem.rsplit("-", 1)[1]) or None


def score_external(ext, trained, ctx) -> dict[str, Any]:
    path = Path(ext.path).expanduser()
    if not path.is_dir():
        from bioprior.plugin import DataUnavailable

        raise DataUnavailable(missing_message(ext, path))
    data = trained.data
    trials = human_trials(ext)
    images, folder_classes, files = load_folder(path, data.channels, data.size)
    stems = [Path(f).stem for f in files]
    targets = class_targets(ext, folder_classes, data.classes, data.num_classes)
    keep = [i for i, c in enumerate(folder_classes) if c in targets]
    names = sorted(targets)
    probs = predictions(trained.module, images[keep], ctx.device, ctx.seed).numpy()
    scores = np.stack([probs[:, targets[c]].mean(1) for c in names], axis=1)
    decided = [names[j] for j in scores.argmax(1)]
    truth = [folder_classes[i] for i in keep]
    hits = np.array([d == t for d, t in zip(decided, truth, strict=True)], dtype=bool)
    out: dict[str, Any] = {
        "images": len(keep),
        "classes": names,
        "accuracy": float(np.mean(hits)),
        "correct": hits,  # moved to the result's ``correct`` metric by run()
    }
    if trials is not None:
        kept = [(folder_classes[i], files[i]) for i in keep]
        try:
            image_of = humans.match(trials, kept, path)
        except ValueError as exc:
            raise ValueError(f"external set {ext.name!r}: human_trials: {exc}") from None
        out["human"] = humans.compare(trials, image_of, hits)
    if ext.cue_conflict:
        shape_hits = texture_hits = conflicts = 0
        for d, t, i in zip(decided, truth, keep, strict=True):
            tex = texture_class(stems[i])
            if tex is None or tex == t or tex not in targets:
                continue
            conflicts += 1
            shape_hits += d == t
            texture_hits += d == tex
        hits = shape_hits + texture_hits
        out.update(
            {
                "conflict_images": conflicts,
                "shape_match": shape_hits / conflicts if conflicts else None,
                "texture_match": texture_hits / conflicts if conflicts else None,
                "shape_bias": shape_hits / hits if hits else None,
            }
        )
    return out


def human_trials(ext) -> list[humans.Trial] | None:
    """The set's human trials (None without any); DataUnavailable for a missing file."""
    if ext.human_trials is None:
        return None
    try:
        return humans.read_trials(ext.human_trials)
    except FileNotFoundError as exc:
        from bioprior.plugin import DataUnavailable

        raise DataUnavailable(
            f"external set {ext.name!r}: human_trials: {exc}: give CSV files (or folders of "
            f"them) in model-vs-human's raw-data layout ({humans.LAYOUT}), e.g. its "
            "raw-data/<dataset>/ folder"
        ) from None
    except ValueError as exc:
        raise ValueError(f"external set {ext.name!r}: human_trials: {exc}") from None


def rendered_set(p, data, seed: int) -> StimulusSet:
    """The renderings of ``data``'s test images that a run with ``seed`` evaluates, before
    generation (``ensure()`` makes what the cache lacks)."""
    from bioprior.benchmarks.stimuli import subset_indices

    idx = subset_indices(len(data.test_x), p.max_images, seed)
    src = to_uint8(data.test_x[idx])
    return StimulusSet(src, conditions(p), TRANSFORM, seed, VERSION, p.workers, split_images=False)


def run(p, ctx):
    from bioprior.benchmarks.stimuli import subset_indices
    from bioprior.plugin import BenchmarkResult, pack_correct

    trained = ctx.trained()
    data = trained.data
    idx = subset_indices(len(data.test_x), p.max_images, ctx.seed)
    y = data.test_y[idx]
    stim = rendered_set(p, data, ctx.seed)
    clean = Condition("clean", "clean", 0)
    hits: dict[Condition, np.ndarray] = {}
    clean_acc = evaluate(
        trained.module, [(clean, stim.source)], y, ctx.device, ctx.seed, 1024, hits
    )[clean]
    conds = stim.conditions
    acc = evaluate(
        trained.module, stim.ensure().items(), y, ctx.device, ctx.seed, p.batch_size, hits
    )
    metrics: dict[str, Any] = {
        "clean_acc": clean_acc,
        "chance": 1.0 / data.num_classes,
        "accuracy": {c.name: acc[c] for c in conds},
        "images": len(idx),
        "stimuli": dict(stim.stats),
        "correct": packed_tree(hits, key=lambda c: (c.name,)),
    }
    external = {ext.name: score_external(ext, trained, ctx) for ext in p.external}
    if external:
        metrics["correct"]["external"] = {
            name: pack_correct(e.pop("correct")) for name, e in external.items()
        }
        metrics["external"] = external
    accs = list(metrics["accuracy"].values()) + [e["accuracy"] for e in external.values()]
    metrics["mean_style_acc"] = float(np.mean(accs)) if accs else None
    return BenchmarkResult(metrics, metrics["mean_style_acc"])


def preview(p, images, seed: int):
    import torch

    from bioprior.benchmarks.stimuli import transform_now

    out = {"clean": images}
    for c, a in transform_now(TRANSFORM, to_uint8(images), conditions(p), seed).items():
        out[c.name] = torch.from_numpy(a).float() / 255.0
    return out
