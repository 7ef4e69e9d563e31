"""Neural data plugins: a loader for recorded data in a documented file format, and a clearly
labelled synthetic V1-like population for tests and quick runs.

li2019 (Sec. 2) regularized with mouse V1 responses to 5,100 grayscale ImageNet images (64 x 36
px); safarani2021 co-trained on monkey V1 recordings. Neither data set is available offline, so:

``neural_file``: your own recordings (or a predictive model's responses, li2019 Sec. 2.2) in a
``.npz`` file, read with ``numpy.load(allow_pickle=False)`` (no pickles, no code). Arrays:

=============== =========================== ===============================================
array           shape / dtype               meaning
=============== =========================== ===============================================
``stimuli``     (N, H, W) or (N, C, H, W);  the images shown; uint8 in [0, 255] or float in
                uint8 or float              [0, 1]; C = 1 (grayscale, li2019) or 3
``responses``   (repeats, N, neurons) or    responses of each neuron to each stimulus on
                (N, neurons); float         each repeat (trial); NaN where a stimulus was
                                            shown fewer times. (N, neurons) = one repeat
                                            (e.g. trial averages or model predictions)
``similarity``  (N, N); float in [-1, 1]    a precomputed stimulus similarity matrix
                                            (li2019 Eq. 2 / 3 / 6)
``synthetic``   () bool, optional           True if the responses are not recordings
``description`` () str, optional            free text (source, area, animal, units)
=============== =========================== ===============================================

``stimuli`` and at least one of ``responses`` / ``similarity`` are required. Write one with
:func:`save_neural_file`. A relative ``path`` is looked up in the working directory, then under
the data root (``$BIOPRIOR_DATA`` or ``$BIOPRIOR_HOME/data``).

``synthetic_v1``: SYNTHETIC data, NOT RECORDINGS. Responses of a fixed, seeded population of
random Gabor filters (simple cells: rectified linear filter; complex cells: quadrature energy)
with Poisson spiking noise over repeats, to natural-image patches cut from scikit-image's sample
images (or to digits). It has V1-like structure (orientation / frequency / position tuning, trial
variability, unequal reliability) so the regularizer and the signal-to-noise weighting of li2019
Eq. 1 have something to work with, but any score obtained with it says nothing about brains.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from bioprior.registry.entries import PluginParams
from bioprior.registry.hookspecs import hookimpl

LI2019 = (
    "Li, Brendel, Walker, Cobos, Muhammad, Reimer, Bethge, Sinz, Pitkow & Tolias (2019), "
    "Learning from brains how to regularize machines (NeurIPS)"
)
SYNTHETIC_LABEL = "SYNTHETIC, not recordings"

#: scikit-image sample images used as natural-image sources (all bundled with the package)
NATURAL_SOURCES: tuple[str, ...] = (
    "camera",
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
    "clock",
    "hubble_deep_field",
)


class SyntheticV1Params(PluginParams):
    num_stimuli: int = Field(default=200, ge=4, le=20000, description="Number of stimuli N.")
    num_neurons: int = Field(default=100, ge=1, le=20000, description="Number of model neurons.")
    repeats: int = Field(
        default=2, ge=1, le=100, description="Trials per stimulus (>= 2 for the Eq. 1 SNR weights)."
    )
    size: int = Field(default=32, ge=8, le=256, description="Stimulus height = width in px.")
    channels: Literal[1, 3] = Field(
        default=1, description="Stimulus channels (li2019: grayscale, 1; RGB repeats the gray)."
    )
    stimuli: Literal["natural", "digits"] = Field(
        default="natural",
        description="natural: patches of scikit-image's sample photographs (grayscale); digits: "
        "scikit-learn's 8x8 digits upsampled (note: the same images the digits task trains on).",
    )
    patch_scale: tuple[float, float] = Field(
        default=(0.15, 0.5),
        description="Range of the patch side as a fraction of the shorter side of the source "
        "photograph (natural stimuli only).",
    )
    complex_fraction: float = Field(
        default=0.5, ge=0, le=1, description="Fraction of complex (energy-model) cells."
    )
    mean_rate: float = Field(
        default=4.0,
        gt=0,
        le=100,
        description="Typical evoked spike count per trial at one std of a neuron's drive.",
    )
    baseline: float = Field(
        default=0.5, ge=0, le=100, description="Spontaneous spike count per trial."
    )
    seed: int = Field(default=0, description="Seed of the stimuli, the population and the noise.")


class NeuralFileParams(PluginParams):
    path: str = Field(
        default="neural/li2019_v1.npz",
        description="The .npz file (format in bioprior.plugins.neural_data). Relative paths: the "
        "working directory, then the data root ($BIOPRIOR_DATA or $BIOPRIOR_HOME/data).",
    )
    synthetic: bool = Field(
        default=False,
        description="Mark the data as synthetic (overridden to True if the file says so).",
    )


# -- synthetic_v1 ---------------------------------------------------------------------------


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

    from bioprior.registry.neural import NeuralData

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


# -- neural_file ----------------------------------------------------------------------------


def resolve_path(path: str) -> Path:
    """The file a ``path`` parameter names: as given (``~`` expanded), else under the data root."""
    from bioprior.registry.paths import data_root

    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    rooted = data_root() / given
    return rooted if rooted.exists() else given


def _bad(path: Path, field: str, message: str) -> ValueError:
    return ValueError(f"{path}: array {field!r}: {message}")


def load_neural_file(params: NeuralFileParams):
    """Read a neural data file (module docstring); errors name the file and the array."""
    import torch

    from bioprior.registry.data import DataUnavailable
    from bioprior.registry.neural import NeuralData

    path = resolve_path(params.path)
    if not path.is_file():
        raise DataUnavailable(
            f"neural_file: {params.path} not found (looked in the working directory and the data "
            "root). Neural recordings are not shipped: write your own with "
            "bioprior.plugins.neural_data.save_neural_file (format in its module docstring), or "
            "use the synthetic_v1 data (synthetic, not recordings)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz file without pickles ({exc})") from None

    if "stimuli" not in arrays:
        raise _bad(path, "stimuli", "missing (required)")
    stimuli = arrays["stimuli"]
    if stimuli.ndim == 3:
        stimuli = stimuli[:, None]
    if stimuli.ndim != 4 or stimuli.shape[1] not in (1, 3) or len(stimuli) < 2:
        raise _bad(
            path, "stimuli", f"must be (N, H, W) or (N, 1|3, H, W), got {arrays['stimuli'].shape}"
        )
    if stimuli.dtype == np.uint8:
        stim = torch.from_numpy(np.ascontiguousarray(stimuli))
    elif np.issubdtype(stimuli.dtype, np.floating):
        if not np.isfinite(stimuli).all() or stimuli.min() < 0 or stimuli.max() > 1:
            raise _bad(path, "stimuli", "float stimuli must be finite and in [0, 1]")
        stim = torch.from_numpy(np.ascontiguousarray(stimuli, dtype=np.float32))
    else:
        raise _bad(path, "stimuli", f"must be uint8 or float, got {stimuli.dtype}")
    n = len(stim)

    responses = None
    if "responses" in arrays:
        r = arrays["responses"]
        if r.ndim == 2:
            r = r[None]
        if r.ndim != 3 or r.shape[1] != n or not np.issubdtype(r.dtype, np.number):
            raise _bad(
                path,
                "responses",
                f"must be (repeats, {n}, neurons) or ({n}, neurons) numbers, "
                f"got {arrays['responses'].shape} {arrays['responses'].dtype}",
            )
        r = r.astype(np.float32)
        if np.isinf(r).any():
            raise _bad(path, "responses", "infinite values (use NaN for missing repeats)")
        if np.isnan(r).all(0).any():
            raise _bad(path, "responses", "some stimulus/neuron has no finite repeat")
        responses = torch.from_numpy(r)

    similarity = None
    if "similarity" in arrays:
        s = arrays["similarity"]
        if s.shape != (n, n) or not np.issubdtype(s.dtype, np.number):
            raise _bad(path, "similarity", f"must be ({n}, {n}) numbers, got {s.shape} {s.dtype}")
        if not np.isfinite(s).all() or np.abs(s).max() > 1 + 1e-6:
            raise _bad(path, "similarity", "must be finite and in [-1, 1]")
        similarity = torch.from_numpy(s.astype(np.float32))
    if responses is None and similarity is None:
        raise _bad(path, "responses", "neither 'responses' nor 'similarity' is present")

    synthetic = params.synthetic or bool(arrays.get("synthetic", np.asarray(False)))
    text = str(arrays["description"]) if "description" in arrays else ""
    label = f" ({SYNTHETIC_LABEL})" if synthetic else ""
    return NeuralData(
        name=f"neural_file {path.name}{label}",
        stimuli=stim,
        responses=responses,
        similarity=similarity,
        synthetic=synthetic,
        description=(f"{SYNTHETIC_LABEL}: " if synthetic else "") + (text or str(path)),
    )


def save_neural_file(path: str | Path, data) -> Path:
    """Write a :class:`~bioprior.registry.neural.NeuralData` in the ``neural_file`` format."""
    arrays: dict[str, np.ndarray] = {"stimuli": data.stimuli.cpu().numpy()}
    if data.responses is not None:
        arrays["responses"] = data.responses.cpu().float().numpy()
    if data.similarity is not None:
        arrays["similarity"] = data.similarity.cpu().float().numpy()
    arrays["synthetic"] = np.asarray(bool(data.synthetic))
    arrays["description"] = np.asarray(str(data.description))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


@hookimpl
def register_neural_data(register):
    register(
        name="synthetic_v1",
        factory="bioprior.plugins.neural_data:synthetic_v1",
        params=SyntheticV1Params,
        version="1",
        citation="bioprior (synthetic stand-in for " + LI2019 + ")",
        description=f"{SYNTHETIC_LABEL}: random Gabor population + Poisson noise on natural-image "
        "patches, for tests and quick runs.",
        tags=("synthetic",),
    )
    register(
        name="neural_file",
        factory="bioprior.plugins.neural_data:load_neural_file",
        params=NeuralFileParams,
        version="1",
        citation=LI2019,
        description="Your recordings from a .npz file: stimuli, responses (repeats, N, neurons) "
        "and/or a similarity matrix (format: bioprior.plugins.neural_data).",
    )
