"""synthetic_v1: a SYNTHETIC V1-like population (seeded random Gabor filters, simple and complex
cells, Poisson noise) for tests and quick runs; never recordings (see
:mod:`bioprior.plugins.neural_data`)."""

from __future__ import annotations

import math

import numpy as np

from bioprior.plugins.neural_data import NATURAL_SOURCES, SYNTHETIC_LABEL, SyntheticV1Params


def _natural_patches(p: SyntheticV1Params, rng: np.random.Generator) -> np.ndarray:
    """(N, size, size) float32 grayscale patches in [0, 1], cut at random positions and scales."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    sources = []
    for name in NATURAL_SOURCES:
        img = getattr(skimage.data, name)()
        img = rgb2gray(img[..., :3]) if img.ndim == 3 else img.astype(np.float64) / 255.0
        sources.append(np.asarray(img, dtype=np.float64))
    out = np.empty((p.num_stimuli, p.size, p.size), dtype=np.float32)
    for i in range(p.num_stimuli):
        img = sources[int(rng.integers(len(sources)))]
        h, w = img.shape
        side = max(4, round(rng.uniform(*sorted(p.patch_scale)) * min(h, w)))
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        patch = img[top : top + side, left : left + side]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        out[i] = resize(patch, (p.size, p.size), anti_aliasing=True, preserve_range=True)
    return out.clip(0.0, 1.0)


def _digit_stimuli(p: SyntheticV1Params, rng: np.random.Generator) -> np.ndarray:
    from skimage.transform import resize
    from sklearn.datasets import load_digits

    images = load_digits().images / 16.0
    index = rng.choice(len(images), size=p.num_stimuli, replace=p.num_stimuli > len(images))
    return np.stack(
        [resize(images[i], (p.size, p.size), order=1, preserve_range=True) for i in index]
    ).astype(np.float32)


def random_gabor_pairs(
    num: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``num`` random zero-mean, unit-norm Gabor quadrature pairs (num, size, size) x 2.

    Orientation uniform; spatial frequency log-uniform in [max(1/16, 1.5/size), 1/4] cycles/px
    (at least 1.5 cycles per image, at most half the Nyquist limit, so small stimuli do not
    alias); envelope sigma = 0.4 / frequency (about 1.5 octaves bandwidth); centres in the
    middle 60 % of the image; aspect ratio 0.6 - 1.
    """
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    low, high = max(1 / 16, 1.5 / size), 1 / 4
    even = np.empty((num, size, size))
    odd = np.empty((num, size, size))
    for a in range(num):
        theta = rng.uniform(0, math.pi)
        freq = math.exp(rng.uniform(math.log(low), math.log(high)))
        sigma = 0.4 / freq
        aspect = rng.uniform(0.6, 1.0)
        cy, cx = rng.uniform(-0.3, 0.3, size=2) * size
        phase = rng.uniform(0, 2 * math.pi)
        u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
        v = -(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)
        envelope = np.exp(-(u**2 + (aspect * v) ** 2) / (2 * sigma**2))
        for bank, ph in ((even, phase), (odd, phase + math.pi / 2)):
            g = envelope * np.cos(2 * math.pi * freq * u + ph)
            g -= envelope * (g.sum() / envelope.sum())  # zero DC: no luminance response
            bank[a] = g / max(np.linalg.norm(g), 1e-12)
    return even, odd


def synthetic_rates(p: SyntheticV1Params, gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise-free expected spike counts (N, neurons) of the seeded Gabor population."""
    even, odd = random_gabor_pairs(p.num_neurons, p.size, rng)
    x = gray.reshape(len(gray), -1).astype(np.float64)
    x = x - x.mean(1, keepdims=True)
    drive_even = x @ even.reshape(p.num_neurons, -1).T
    drive_odd = x @ odd.reshape(p.num_neurons, -1).T
    is_complex = rng.random(p.num_neurons) < p.complex_fraction
    drive = np.where(is_complex, np.sqrt(drive_even**2 + drive_odd**2), np.maximum(drive_even, 0.0))
    # each neuron's drive in units of its own spread, then a log-normal gain (unequal SNR)
    drive = drive / np.maximum(drive.std(0, keepdims=True), 1e-12)
    gain = p.mean_rate * rng.lognormal(0.0, 0.5, size=p.num_neurons)
    return p.baseline + gain * drive


def synthetic_v1(params: SyntheticV1Params):
    """SYNTHETIC, not recordings: seeded Gabor-population responses with Poisson noise."""
    import torch

    from bioprior.plugin import NeuralData

    rng = np.random.default_rng(params.seed)
    gray = (
        _natural_patches(params, rng)
        if params.stimuli == "natural"
        else _digit_stimuli(params, rng)
    )
    rates = synthetic_rates(params, gray, rng)
    counts = rng.poisson(np.broadcast_to(rates, (params.repeats, *rates.shape)))
    stimuli = torch.from_numpy(gray)[:, None].expand(-1, params.channels, -1, -1).contiguous()
    return NeuralData(
        name=f"synthetic_v1 ({SYNTHETIC_LABEL})",
        stimuli=stimuli,
        responses=torch.from_numpy(counts.astype(np.float32)),
        similarity=None,
        synthetic=True,
        description=(
            f"{SYNTHETIC_LABEL}: {params.num_neurons} random Gabor filters "
            f"({params.complex_fraction:.0%} complex cells) with Poisson noise, "
            f"{params.repeats} repeats of {params.num_stimuli} {params.stimuli} stimuli "
            f"({params.size} px, seed {params.seed})"
        ),
    )
