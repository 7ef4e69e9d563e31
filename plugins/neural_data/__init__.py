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
:func:`~bioprior.plugins.neural_data.files.save_neural_file`. A relative ``path`` is looked up
in the working directory, then under the data root (``$BIOPRIOR_DATA`` or ``$BIOPRIOR_HOME/data``).

``synthetic_v1``: SYNTHETIC data, NOT RECORDINGS. Responses of a fixed, seeded population of
random Gabor filters (simple cells: rectified linear filter; complex cells: quadrature energy)
with Poisson spiking noise over repeats, to natural-image patches cut from scikit-image's sample
images (or to digits). It has V1-like structure (orientation / frequency / position tuning, trial
variability, unequal reliability) so the regularizer and the signal-to-noise weighting of li2019
Eq. 1 have something to work with, but any score obtained with it says nothing about brains.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bioprior.plugin import PluginParams, hookimpl

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
        json_schema_extra={"file": "npz"},
        description="The .npz file (format in bioprior.plugins.neural_data). Relative paths: the "
        "working directory, then the data root ($BIOPRIOR_DATA or $BIOPRIOR_HOME/data).",
    )
    synthetic: bool = Field(
        default=False,
        description="Mark the data as synthetic (overridden to True if the file says so).",
    )


@hookimpl
def register_neural_data(register):
    register(
        name="synthetic_v1",
        factory="bioprior.plugins.neural_data.synthetic:synthetic_v1",
        params=SyntheticV1Params,
        version="1",
        citation="bioprior (synthetic stand-in for " + LI2019 + ")",
        description=f"{SYNTHETIC_LABEL}: random Gabor population + Poisson noise on natural-image "
        "patches, for tests and quick runs.",
        tags=("synthetic",),
    )
    register(
        name="neural_file",
        factory="bioprior.plugins.neural_data.files:load_neural_file",
        params=NeuralFileParams,
        version="1",
        citation=LI2019,
        description="Your recordings from a .npz file: stimuli, responses (repeats, N, neurons) "
        "and/or a similarity matrix (format: bioprior.plugins.neural_data).",
    )
