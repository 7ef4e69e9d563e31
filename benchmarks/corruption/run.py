"""Implementation of the ``corruption`` benchmark (see ``corruption.py`` for the definitions).

The transform functions at the top are numpy-only (they run in process-pool workers); torch is
imported inside the evaluation functions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bioprior.benchmarks.stimuli import (
    Condition,
    StimulusSet,
    evaluate,
    image_rng,
    packed_tree,
    subset_indices,
    to_uint8,
)

from . import imagecorruptions_compat as ic

TRANSFORM = "bioprior.benchmarks.corruption.run:transform"
VERSION = "2"  # 2: CIFAR-10-C's own elastic_transform in the cifar10_c preset
LUMA = np.array([0.299, 0.587, 0.114])

#: evanson2022 Table 1 (after Hendrycks & Dietterich 2019).
CATEGORIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "other": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
}
SWEEPS = ("uniform_noise", "salt_and_pepper", "gaussian_noise_std")


# -- transforms (numpy only) -----------------------------------------------------------------
def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 HWC RGB -> size x size (PIL bilinear; anti-aliased when shrinking)."""
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def imagecorruption(images: np.ndarray, name: str, severity: int, seed: int, start: int, preset):
    """Corrupt uint8 (N, C, H, W) images with the library: each image as uint8 HWC RGB (gray
    repeated), upsampled to 32 px when smaller (the library's minimum) and resized back after,
    then back to gray with ITU-R 601 luma when the source was gray."""
    n, c, h, w = images.shape
    if preset == "auto":  # the constants made for the closest image size
        preset = "cifar10_c" if max(h, w) <= 96 else "imagenet_c"
    out = np.empty_like(images)
    for i in range(n):
        hwc = images[i].transpose(1, 2, 0)
        rgb = np.repeat(hwc, 3, axis=2) if c == 1 else hwc
        small = min(h, w) < ic.MIN_SIZE
        if small:
            rgb = _resize(rgb, ic.MIN_SIZE)
        if name == "identity":
            res = rgb
        else:
            seed_i = ic.image_seed(seed, name, severity, start + i)
            res = ic.corrupt(np.ascontiguousarray(rgb), name, severity, seed_i, preset)
        if small:
            res = _resize(res, h)
        if c == 1:
            res = np.clip(np.rint(res.astype(np.float64) @ LUMA), 0, 255)[..., None]
        out[i] = np.uint8(res).transpose(2, 0, 1)
    return out


def _gray_contrast(x: np.ndarray, contrast: float) -> np.ndarray:
    """Geirhos et al. (2018): grayscale (luma, kept in every channel), contrast reduced about 0.5."""
    if x.shape[0] == 3:
        x = np.repeat(np.tensordot(LUMA, x, axes=(0, 0))[None], 3, axis=0)
    return (1 - contrast) / 2 + contrast * x


def noise_sweep(images: np.ndarray, condition: Condition, seed: int, start: int) -> np.ndarray:
    out = np.empty_like(images)
    level = float(condition.level)
    for i, img in enumerate(images):
        rng = image_rng(seed, condition, start + i)
        x = img.astype(np.float64) / 255.0
        if condition.name == "uniform_noise":
            x = _gray_contrast(x, condition.param("contrast", 1.0))
            x = x + rng.uniform(-level, level, size=x.shape[1:])[None]
        elif condition.name == "salt_and_pepper":
            x = _gray_contrast(x, condition.param("contrast", 1.0))
            u = rng.random(x.shape[1:])
            x = np.where((u < level / 2)[None], 0.0, x)
            x = np.where(((u >= level / 2) & (u < level))[None], 1.0, x)
        elif condition.name == "gaussian_noise_std":
            x = x + rng.normal(0.0, level, size=x.shape)
        else:
            raise ValueError(f"unknown noise sweep {condition.name!r}")
        out[i] = np.uint8(np.clip(np.rint(x * 255.0), 0, 255))
    return out


def transform(images: np.ndarray, condition: Condition, seed: int, start: int) -> np.ndarray:
    if condition.family == "identity":
        return images.copy()
    if condition.family == "resample":  # the corruption stage's resampling alone (< 32 px)
        return imagecorruption(images, "identity", 0, seed, start, None)
    if condition.family == "imagecorruptions":
        return imagecorruption(
            images,
            condition.name,
            int(condition.level),
            seed,
            start,
            condition.param("preset", "imagenet_c"),
        )
    if condition.family == "noise":
        return noise_sweep(images, condition, seed, start)
    raise ValueError(f"unknown condition family {condition.family!r}")


# -- conditions ------------------------------------------------------------------------------
def conditions(p, size: int | None = None) -> list[Condition]:
    """The benchmark's conditions; with ``size`` < 32 and imagecorruptions selected, also the
    resampling round trip alone (``upsampling_round_trip``), to separate its effect."""
    out: list[Condition] = []
    if size is not None and size < ic.MIN_SIZE and any(n != "identity" for n in p.corruptions):
        out.append(Condition("resample", "upsampling_round_trip", 0))
    for name in p.corruptions:
        if name == "identity":
            out.append(Condition("identity", "identity", 0))
        else:
            for s in p.severities:
                out.append(Condition("imagecorruptions", name, int(s), (("preset", p.preset),)))
    for name in p.noise_sweeps:
        if name == "gaussian_noise_std":
            levels = p.gaussian_noise_stds
            extra: tuple = ()
        else:
            levels = p.geirhos_levels
            extra = (("contrast", p.geirhos_contrast),)
        for level in levels:
            out.append(Condition("noise", name, round(float(level), 6), extra))
    return out


# -- evaluation ------------------------------------------------------------------------------
def load_precomputed(folder: Path, name: str, severity: int, channels: int, size: int, n: int):
    """CIFAR-10-C / ImageNet-C layout: ``<folder>/<name>.npy`` (5 * M, H, W, 3) uint8, severity
    major, and ``<folder>/labels.npy``; returns (images uint8 N, C, H, W fitted, labels)."""
    import torch

    from bioprior.plugin import DataUnavailable, fit_images

    path = folder / f"{name}.npy"
    if not path.exists():
        raise DataUnavailable(
            f"precomputed corruption {path} not found: download CIFAR-10-C "
            "(https://zenodo.org/record/2535967) or convert ImageNet-C to '<corruption>.npy' "
            "arrays (5 x M images, severity 1 first, uint8 H x W x 3) plus 'labels.npy' in it"
        )
    a = np.load(path, mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    m = len(a) // 5
    block = np.asarray(a[(severity - 1) * m : (severity - 1) * m + min(m, n)])
    x = torch.from_numpy(block.copy()).permute(0, 3, 1, 2).float().div_(255.0)
    x = fit_images(x, channels, size)
    y = torch.from_numpy(
        labels[(severity - 1) * m : (severity - 1) * m + min(m, n)].astype(np.int64)
    )
    return to_uint8(x), y


def stimulus_set(p, data, seed: int, conds: list[Condition] | None = None) -> StimulusSet:
    """The corrupted copies of ``data``'s test images that a run with ``seed`` evaluates (the
    conditions not precomputed), before generation: ``ensure()`` makes what the cache lacks."""
    conds = conditions(p, data.size) if conds is None else conds
    idx = subset_indices(len(data.test_x), p.max_images, seed)
    generated = [c for c in conds if not (p.precomputed and c.family == "imagecorruptions")]
    return StimulusSet(to_uint8(data.test_x[idx]), generated, TRANSFORM, seed, VERSION, p.workers)


def score_model(trained, conds: list[Condition], p, ctx) -> dict[str, Any]:
    """Accuracy of one trained model on clean and on every condition, and which images it got
    right (``correct``, packed as the ``correct`` metric stores it)."""
    data = trained.data
    idx = subset_indices(len(data.test_x), p.max_images, ctx.seed)
    y = data.test_y[idx]
    stim = stimulus_set(p, data, ctx.seed, conds)
    clean = Condition("clean", "clean", 0)
    hits: dict[Condition, np.ndarray] = {}
    acc: dict[Condition, float] = evaluate(
        trained.module, [(clean, stim.source)], y, ctx.device, ctx.seed, p.batch_size, hits
    )
    stim.ensure()
    acc.update(evaluate(trained.module, stim.items(), y, ctx.device, ctx.seed, p.batch_size, hits))
    if p.precomputed:
        folder = Path(p.precomputed).expanduser()
        for c in conds:
            if c.family == "imagecorruptions":
                a, labels = load_precomputed(
                    folder, c.name, int(c.level), data.channels, data.size, len(idx)
                )
                acc.update(
                    evaluate(trained.module, [(c, a)], labels, ctx.device, ctx.seed, 1024, hits)
                )
    return {
        "clean": acc.pop(clean),
        "acc": acc,
        "correct": packed_tree(hits),
        "stats": stim.stats,
        "images": len(idx),
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def corruption_errors(own: dict, base: dict, names: list[str]) -> dict[str, Any]:
    """Hendrycks & Dietterich (2019), Sec. 4: CE_c = sum_s E_{s,c} / sum_s E^base_{s,c};
    relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean);
    safarani2021: robustness_c = A_c / A^base_c (A_c the mean accuracy over severities)."""
    ce, rce, ratio = {}, {}, {}
    for name in names:
        mine = [
            1 - a
            for c, a in own["acc"].items()
            if c.family == "imagecorruptions" and c.name == name
        ]
        theirs = [
            1 - a
            for c, a in base["acc"].items()
            if c.family == "imagecorruptions" and c.name == name
        ]
        if not mine or len(mine) != len(theirs):
            continue
        e_own, e_base = sum(mine), sum(theirs)
        ce[name] = e_own / e_base if e_base > 0 else None
        d_own = e_own - len(mine) * (1 - own["clean"])
        d_base = e_base - len(theirs) * (1 - base["clean"])
        rce[name] = d_own / d_base if d_base > 0 else None
        a_own, a_base = 1 - e_own / len(mine), 1 - e_base / len(theirs)
        ratio[name] = a_own / a_base if a_base > 0 else None
    return {
        "ce": ce,
        "mce": _mean(ce.values()),
        "relative_ce": rce,
        "relative_mce": _mean(rce.values()),
        "robustness": ratio,
        "robustness_score": _mean(ratio.values()),
    }


def table(result: dict) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for c, a in result["acc"].items():
        out.setdefault(c.name, {})[
            f"{c.level:g}" if isinstance(c.level, float) else str(c.level)
        ] = a
    return out


def per_corruption(result: dict) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for c, a in result["acc"].items():
        if c.family == "imagecorruptions":
            by.setdefault(c.name, []).append(a)
    return {k: sum(v) / len(v) for k, v in by.items()}


def baseline_model(p, ctx):
    spec = p.baseline
    model = None
    if spec.model is not None:
        model = ctx.component("model", spec.model.name, dict(spec.model.params))
    constraints = tuple(
        ctx.component("constraint", c.name, dict(c.params)) for c in spec.constraints
    )
    return ctx.trained(model=model, constraints=constraints)


def run(p, ctx):
    from bioprior.plugin import BenchmarkResult

    trained = ctx.trained()
    conds = conditions(p, trained.data.size)
    own = score_model(trained, conds, p, ctx)
    names = [n for n in p.corruptions if n != "identity"]
    per = per_corruption(own)
    mca = _mean(per.values())
    if mca is None:  # no imagecorruptions selected: the mean over the other conditions
        mca = _mean(a for c, a in own["acc"].items() if c.family == "noise")
    metrics: dict[str, Any] = {
        "clean_acc": own["clean"],
        "clean_acc_float": ctx.accuracy(trained, "test"),
        "accuracy": table(own),
        "corruption_acc": per,
        "category_acc": {
            k: _mean(per.get(n) for n in v)
            for k, v in CATEGORIES.items()
            if any(n in per for n in v)
        },
        "mean_corruption_acc": mca,
        "relative_corruption_acc": (mca / own["clean"])
        if mca is not None and own["clean"] > 0
        else None,
        "images": own["images"],
        "image_size": int(trained.data.size),
        "upsampled_to": ic.MIN_SIZE if trained.data.size < ic.MIN_SIZE else None,
        "preset": p.preset,
        "precomputed": p.precomputed,
        "stimuli": dict(own["stats"]),
        "correct": own["correct"],
    }
    if trained.data.size < ic.MIN_SIZE and any(c.family == "imagecorruptions" for c in conds):
        metrics["note"] = (
            f"images of {trained.data.size} px were upsampled to {ic.MIN_SIZE} px (bilinear) for "
            "imagecorruptions, which rejects smaller images, and resized back after"
        )
    if p.baseline is not None:
        base_trained = baseline_model(p, ctx)
        base = score_model(base_trained, conds, p, ctx)
        for k, v in base["stats"].items():
            metrics["stimuli"][k] += v
        metrics["baseline"] = {
            "model": p.baseline.model.model_dump() if p.baseline.model else "submission's",
            "constraints": [c.model_dump() for c in p.baseline.constraints],
            "weights_hash": base_trained.weights_hash,
            "clean_acc": base["clean"],
            "corruption_acc": per_corruption(base),
            "accuracy": table(base),
            "correct": base["correct"],
        }
        metrics.update(corruption_errors(own, base, names))
    score = metrics["relative_corruption_acc"]
    score = None if score is None else min(max(score, 0.0), 1.0)
    return BenchmarkResult(metrics, score)


def preview(p, images, seed: int):
    """{condition label: images} for ``bioprior preview`` (same transforms, uncached)."""
    import torch

    from bioprior.benchmarks.stimuli import transform_now

    src = to_uint8(images)
    out = {"clean": images}
    for c, a in transform_now(TRANSFORM, src, conditions(p, src.shape[-1]), seed).items():
        out[c.label] = torch.from_numpy(a).float() / 255.0
    return out
