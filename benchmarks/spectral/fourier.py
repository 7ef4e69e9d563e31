"""Implementation of the ``spectral`` benchmark (see ``spectral.py`` for the definitions):
Fourier-space filters as stimulus-set transforms (numpy only, they run in worker processes),
the radially averaged amplitude spectrum and its FWHM, and the Fourier heat map (torch,
imported inside the functions)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bioprior.benchmarks.stimuli import (
    Condition,
    StimulusSet,
    evaluate,
    packed_tree,
    subset_indices,
    to_uint8,
)

TRANSFORM = "bioprior.benchmarks.spectral.fourier:transform"
VERSION = "1"


def radius(h: int, w: int) -> np.ndarray:
    """Radial frequency of every FFT bin, in cycles per image."""
    fy = np.fft.fftfreq(h) * h
    fx = np.fft.fftfreq(w) * w
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def max_radius(h: int, w: int) -> float:
    return float(radius(h, w).max())


def gain(condition: Condition, h: int, w: int) -> np.ndarray:
    """The filter's gain per FFT bin. The DC bin (image mean) always passes, so filtered images
    keep their mean luminance (band-pass / high-pass images would otherwise be centred on 0)."""
    r = radius(h, w)
    level = float(condition.level)
    if condition.name == "bandpass":
        sigma = float(condition.param("bandwidth")) / (2 * math.sqrt(2 * math.log(2)))
        g = np.exp(-((r - level) ** 2) / (2 * sigma**2))
    elif condition.name == "lowpass":  # ideal: cutoff as a fraction of the largest radius
        g = (r <= level * r.max() + 1e-9).astype(np.float64)
    elif condition.name == "highpass":
        g = (r >= level * r.max() - 1e-9).astype(np.float64)
    else:
        raise ValueError(f"unknown filter {condition.name!r}")
    g[0, 0] = 1.0
    return g


def transform(images: np.ndarray, condition: Condition, seed: int, start: int) -> np.ndarray:
    """Filter uint8 (N, C, H, W) images in Fourier space (per channel), clip to [0, 1]."""
    g = gain(condition, *images.shape[-2:])
    x = images.astype(np.float64) / 255.0
    y = np.fft.ifft2(np.fft.fft2(x, axes=(-2, -1)) * g, axes=(-2, -1)).real
    return np.uint8(np.clip(np.rint(y * 255.0), 0, 255))


def radial_amplitude(images: np.ndarray) -> np.ndarray:
    """Radially averaged amplitude spectrum (N, R) of the mean-subtracted gray images, in
    integer radius bins 0..R-1 (cycles per image). One ``bincount`` over all images (each
    image's bins offset by R), which adds each bin's values in the same order as one per image."""
    x = images.astype(np.float64).mean(1)
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    amp = np.abs(np.fft.fft2(x, axes=(-2, -1)))
    bins = np.rint(radius(*x.shape[-2:])).astype(int).ravel()
    counts = np.bincount(bins)
    n, r = len(amp), len(counts)
    flat = (bins[None, :] + r * np.arange(n)[:, None]).ravel()
    sums = np.bincount(flat, weights=amp.reshape(-1), minlength=n * r).reshape(n, r)
    return sums / np.maximum(counts, 1)


def fwhm(profile: np.ndarray) -> np.ndarray:
    """Full width at half maximum of each radial profile (N, R), ignoring the DC bin: twice the
    radius at which the amplitude first falls below half its peak (linear interpolation);
    NaN for a flat zero spectrum."""
    p = np.asarray(profile, dtype=np.float64)[:, 1:]
    out = np.full(len(p), np.nan)
    if p.shape[1] == 0:
        return out
    peak = p.max(1)
    k = p.argmax(1)
    half = peak / 2
    after_peak = np.arange(p.shape[1])[None, :] >= k[:, None]
    below = after_peak & (p < half[:, None])
    found = below.any(1)
    j = below.argmax(1)  # first bin past the peak below half of it (where found)
    rows = np.arange(len(p))
    a = p[rows, np.maximum(j - 1, 0)]
    b = p[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(a != b, (j - 1) + (a - half) / (a - b), j.astype(np.float64))
    r = np.where(found, crossing, float(p.shape[1]))
    valid = peak > 0
    out[valid] = 2 * (r[valid] + 1)  # bin 0 of p is radius 1
    return out


#: name and version of :func:`image_fwhm`'s per-image values cached beside each corrupted set
FWHM = "fwhm-1"


def image_fwhm(images: np.ndarray) -> np.ndarray:
    """FWHM of each image's radially averaged amplitude spectrum (N,)."""
    return fwhm(radial_amplitude(images))


def mean_ratio(corrupted_fwhm: np.ndarray, clean_fwhm: np.ndarray) -> float | None:
    """The mean over images of corrupted / clean FWHM, leaving out flat images (NaN)."""
    ratio = corrupted_fwhm / clean_fwhm
    ratio = ratio[np.isfinite(ratio)]
    return float(ratio.mean()) if len(ratio) else None


def bandwidth_ratio(corrupted: np.ndarray, clean: np.ndarray) -> float | None:
    """evanson Fig. 5B: FWHM of the corrupted image / FWHM of the clean one, averaged over images."""
    return mean_ratio(image_fwhm(corrupted), image_fwhm(clean))


def filter_conditions(p, size: int) -> dict[str, list[Condition]]:
    scale = size / p.reference_size
    bw = max(p.bandwidth * scale, p.min_bandwidth)
    out = {
        "bandpass": [
            Condition("fourier", "bandpass", round(c * scale, 6), (("bandwidth", round(bw, 6)),))
            for c in p.centres
        ],
        "lowpass": [Condition("fourier", "lowpass", float(c)) for c in p.lowpass_cutoffs],
        "highpass": [Condition("fourier", "highpass", float(c)) for c in p.highpass_cutoffs],
    }
    return out


def heatmap_basis(size: int, stride: int):
    """Unit-L2 real Fourier basis images U_ij (Yin et al. 2019) for frequencies (i, j) on the
    fftshifted grid, every ``stride``-th; returns (freqs, basis (F, H, W))."""
    freqs = np.arange(-(size // 2), size - size // 2)[::stride]
    basis = []
    for i in freqs:
        for j in freqs:
            spec = np.zeros((size, size), dtype=np.complex128)
            spec[i % size, j % size] = 1.0
            spec[-i % size, -j % size] += 1.0
            u = np.fft.ifft2(spec).real
            norm = np.linalg.norm(u)
            basis.append(u / norm if norm > 0 else u)
    return freqs, np.stack(basis)


def fourier_heatmap(trained, x, y, p, ctx) -> dict[str, Any]:
    """Error rate under additive Fourier-basis noise per frequency (Yin et al. 2019, Fig. 1):
    x + r * eps * U_ij with r = +-1 at random per image and channel, eps the L2 norm
    (``heatmap_rms`` x sqrt(pixels)), clipped to [0, 1]; generated on the fly (not cached)."""
    import torch

    from bioprior.plugin import seeded

    n = min(len(x), p.heatmap_images)
    x, y = x[:n], y[:n]
    c, s = x.shape[1], x.shape[-1]
    freqs, basis = heatmap_basis(s, p.heatmap_stride)
    eps = p.heatmap_rms * math.sqrt(c * s * s)
    gen = torch.Generator().manual_seed(ctx.seed)
    basis_t = torch.from_numpy(basis).float().to(ctx.device)
    errors = []
    with torch.no_grad():
        for k in range(len(basis_t)):
            sign = torch.randint(0, 2, (n, c, 1, 1), generator=gen).float().mul_(2).sub_(1)
            xp = (x + eps * sign.to(ctx.device) * basis_t[k]).clamp_(0, 1)
            correct = 0
            with seeded(ctx.seed, ctx.device):
                for i in range(0, n, p.batch_size):
                    pred = trained.module(xp[i : i + p.batch_size]).argmax(1)
                    correct += int((pred == y[i : i + p.batch_size]).sum())
            errors.append(1 - correct / n)
    grid = np.array(errors).reshape(len(freqs), len(freqs))
    return {
        "frequencies": [int(f) for f in freqs],
        "error": grid.round(6).tolist(),
        "l2_norm": eps,
        "images": n,
    }


def filtered_set(p, data, seed: int) -> StimulusSet:
    """The filtered copies of ``data``'s test images that a run with ``seed`` evaluates, before
    generation (``ensure()`` makes what the cache lacks)."""
    idx = subset_indices(len(data.test_x), p.max_images, seed)
    conds = [c for g in filter_conditions(p, int(data.size)).values() for c in g]
    return StimulusSet(to_uint8(data.test_x[idx]), conds, TRANSFORM, seed, VERSION, p.workers)


def run(p, ctx):
    from bioprior.benchmarks.corruption import run as ci
    from bioprior.plugin import BenchmarkResult

    trained = ctx.trained()
    data = trained.data
    idx = subset_indices(len(data.test_x), p.max_images, ctx.seed)
    x, y = data.test_x[idx], data.test_y[idx]
    stim = filtered_set(p, data, ctx.seed)
    src = stim.source
    size = int(data.size)
    clean = Condition("clean", "clean", 0)
    hits: dict[Condition, np.ndarray] = {}
    clean_acc = evaluate(trained.module, [(clean, src)], y, ctx.device, ctx.seed, 1024, hits)[clean]
    groups = filter_conditions(p, size)
    stim.ensure()
    acc = evaluate(trained.module, stim.items(), y, ctx.device, ctx.seed, p.batch_size, hits)
    r_max = max_radius(size, size)
    metrics: dict[str, Any] = {
        "clean_acc": clean_acc,
        "image_size": size,
        "max_frequency": r_max,
        "bandpass": {
            "centres": [c.level for c in groups["bandpass"]],
            "reference_centres": list(p.centres),
            "bandwidth": groups["bandpass"][0].param("bandwidth") if groups["bandpass"] else None,
            "accuracy": [acc[c] for c in groups["bandpass"]],
        },
        "lowpass": {
            "cutoffs": [c.level for c in groups["lowpass"]],
            "cycles": [c.level * r_max for c in groups["lowpass"]],
            "accuracy": [acc[c] for c in groups["lowpass"]],
        },
        "highpass": {
            "cutoffs": [c.level for c in groups["highpass"]],
            "cycles": [c.level * r_max for c in groups["highpass"]],
            "accuracy": [acc[c] for c in groups["highpass"]],
        },
        "stimuli": dict(stim.stats),
        "correct": packed_tree(hits),
    }
    if p.bandwidth_corruptions:
        cconds = [
            Condition("imagecorruptions", name, int(s), (("preset", p.preset),))
            for name in p.bandwidth_corruptions
            for s in p.bandwidth_severities
        ]
        # under 32 px the corruptions include a resampling round trip: compare with it alone
        ref = Condition("resample", "upsampling_round_trip", 0)
        small = size < ci.ic.MIN_SIZE
        cstim = StimulusSet(
            src, cconds + [ref] * small, ci.TRANSFORM, ctx.seed, ci.VERSION, p.workers
        ).ensure()
        cacc = evaluate(
            trained.module, [(c, cstim[c]) for c in cconds], y, ctx.device, ctx.seed, p.batch_size
        )
        # the FWHMs depend on the sets alone: computed once per set and seed, cached beside it
        reference_fwhm = cstim.derived(ref, FWHM, image_fwhm) if small else image_fwhm(src)
        table: dict[str, dict[str, Any]] = {}
        for c in cconds:
            table.setdefault(c.name, {})[str(c.level)] = {
                "bandwidth_ratio": mean_ratio(cstim.derived(c, FWHM, image_fwhm), reference_fwhm),
                "accuracy": cacc[c],
            }
        metrics["bandwidth_reference"] = ref.name if small else "clean"
        metrics["corruption_bandwidth"] = table
        for k, v in cstim.stats.items():
            metrics["stimuli"][k] += v
    if p.fourier_heatmap:
        metrics["fourier_heatmap"] = fourier_heatmap(trained, x, y, p, ctx)
    bands = metrics["bandpass"]["accuracy"]
    score = None
    if bands and clean_acc > 0:
        score = min(max(float(np.mean(bands)) / clean_acc, 0.0), 1.0)
    metrics["mean_band_acc"] = float(np.mean(bands)) if bands else None
    return BenchmarkResult(metrics, score)


def preview(p, images, seed: int):
    import torch

    from bioprior.benchmarks.stimuli import transform_now

    src = to_uint8(images)
    out = {"clean": images}
    conds = [c for g in filter_conditions(p, src.shape[-1]).values() for c in g]
    for c, a in transform_now(TRANSFORM, src, conds, seed).items():
        out[f"{c.name} {c.level:g}"] = torch.from_numpy(a).float() / 255.0
    if p.fourier_heatmap:
        freqs, basis = heatmap_basis(src.shape[-1], max(1, src.shape[-1] // 4))
        eps = p.heatmap_rms * math.sqrt(images.shape[1] * images.shape[-1] ** 2)
        for k in range(0, len(basis), max(1, len(basis) // 4)):
            i, j = freqs[k // len(freqs)], freqs[k % len(freqs)]
            u = torch.from_numpy(basis[k]).float()
            out[f"fourier ({i},{j})"] = (images + eps * u).clamp(0, 1)
    return out
