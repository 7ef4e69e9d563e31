"""The ``vone_block`` constraint: a fixed model of primate V1 in front of any model (VOneBlock;
Dapello, Marques, Schrimpf, Geiger, Cox & DiCarlo 2020: the VOneBlock and its implementation
details in the supplementary material; reference code dicarlolab/vonenet, files ``modules.py``,
``params.py``, ``utils.py``, ``vonenet.py``), as cited by evanson.

The block (the linear-nonlinear-Poisson model of V1 the paper builds the VOneBlock on):

* GFB, a fixed Gabor filter bank. Each of the ``simple_channels + complex_channels`` units has a
  spatial frequency ``sf`` (cycles/deg), orientation ``theta``, phase ``phi`` and envelope sizes
  ``nx = sigma_x * sf``, ``ny = sigma_y * sf`` (in cycles) sampled from primate V1 data:
  orientation from De Valois et al. 1982a, ``sf`` from De Valois et al. 1982b (truncated to
  ``[sf_min, sf_max]``), ``(nx, ny)`` jointly from Ringach 2002, ``sf`` and ``nx`` correlated
  (``sf_corr``, a Gaussian copula; Schiller et al. 1976), phase uniform. Filters are converted
  to pixels with ``ppd = input_size / visual_degrees`` and each one reads one input channel
  drawn at random. Kernel (vonenet ``utils.gabor_kernel``), in row/column offsets ``(x, y)``::

      g = exp(-(x'^2 / sx^2 + y'^2 / sy^2) / 2) / (2 pi sx sy) * cos(2 pi f x' + phi),
      x' = x cos(theta) + y sin(theta),  y' = -x sin(theta) + y cos(theta)

  i.e. the carrier's wave vector is ``f (cos theta, sin theta)`` in (row, column) coordinates.
* simple cells: ``relu(q0)``; complex cells: the energy model ``sqrt(q0^2 + q1^2) / sqrt(2)``,
  with ``q0``, ``q1`` the responses of the filter at phase ``phi`` and ``phi + pi/2``; both are
  multiplied by the gain ``k_exc``.
* stochasticity, on in training and (by default) at inference as in VOneNet: ``neuronal``
  (Poisson-like: ``x + sqrt(relu(s x + l) + 1e-4) * eps / s`` with ``s = noise_scale``,
  ``l = noise_level``, ``eps ~ N(0, 1)``; vonenet ``modules.VOneBlock.noise_f``) or ``gaussian``
  (``x + noise_scale * eps``), then a ReLU.
* a trained 1x1 convolution (no bias, Kaiming fan-out init) to the back end, 64 channels in
  VOneNet.

Connection to an arbitrary model (the paper leaves it open; VOneNet instead removes the back end's
stem): ``VOneBlock (stride s) -> 1x1 bottleneck -> bilinear upsampling back to the input size ->
the model``, built with ``in_channels = bottleneck_channels`` (its only change; ``None`` keeps the
model's own input channels). ``back_end_size: strided`` skips the upsampling and builds the model
for the block's output size instead (VOneNet's arrangement: the back end runs at H / stride).
The wrapped network has VOneNet's layout: submodules ``vone_block``, ``bottleneck`` and ``model``.

Deviations from the reference code (documented):

* sampling uses a ``numpy.random.RandomState(seed)`` in vonenet's call order, so the same seed
  gives vonenet's parameters; the input channel of each filter, drawn from torch's unseeded
  global RNG in vonenet, is drawn from the same seeded generator after the other parameters;
* the filters for the ``q1`` (phase + pi/2) responses of simple cells, computed and discarded
  by vonenet, are not computed (same outputs);
* complex cells use ``sqrt(max(q0^2 + q1^2, 1e-12))`` so the input gradient stays finite at
  zero (vonenet: ``sqrt`` is NaN-producing there); the value differs by at most 1e-6;
* a filter above the Nyquist frequency (``sf / ppd > 0.5`` cycles/px) is refused
  (``ConstraintError``): the paper's 8 degrees suit 224 px (at most 0.2 cycles/px); small images
  need fewer degrees. Close to the limit a sampled quadrature pair degrades and complex cells lose
  their phase invariance; the defaults stay at or below 0.35 cycles/px;
* defaults are sized for 16 px digits on a CPU (32 + 32 channels, 1 degree, ksize 15, stride 2:
  the paper's 25 px kernel and 4 px stride at 28 px/deg, rescaled to 16 px/deg; a 16-channel
  bottleneck); the paper's values are 256 + 256 channels, ksize 25, stride 4, 8 degrees for
  224 px images and a 64-channel bottleneck.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from bioprior.plugin import (
    UNKNOWN_GEOMETRY,
    Constraint,
    ConstraintError,
    InputGeometry,
    PluginParams,
    hookimpl,
)

DAPELLO2020 = (
    "Dapello, Marques, Schrimpf, Geiger, Cox & DiCarlo (2020), Simulating a primary visual "
    "cortex at the front of CNNs improves robustness to image perturbations (NeurIPS)"
)

#: spatial-frequency histogram bins (cycles/deg) and counts, De Valois et al. 1982b
SF_BINS = np.array([0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0, 11.2])
SF_COUNTS = np.array([4, 4, 8, 25, 32, 26, 28, 12, 8], dtype=float)
#: orientation histogram (deg), De Valois et al. 1982a
ORI_BINS = np.array([-22.5, 22.5, 67.5, 112.5, 157.5])
ORI_COUNTS = np.array([66, 49, 77, 54], dtype=float)
#: joint (nx, ny) histogram on log-spaced bins, Ringach 2002 (rows: nx bins, columns: ny bins)
N_BINS = np.logspace(-1, 0.2, 6, base=10)
N_JOINT = np.array(
    [
        [2.0, 0.0, 1.0, 0.0, 0.0],
        [8.0, 9.0, 4.0, 1.0, 0.0],
        [1.0, 2.0, 19.0, 17.0, 3.0],
        [0.0, 0.0, 1.0, 7.0, 4.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)
#: images whose geometry a model built without a dataset gets (as zhang2017's create_model)
DEFAULT_IN_CHANNELS, DEFAULT_INPUT_SIZE = 3, 32


def _sf_range(distribution: str, sf_min: float, sf_max: float) -> tuple[int, int]:
    """Indices (lo, hi) of the first and last ``SF_BINS`` edge kept (vonenet ``params.py``)."""
    below = np.where(SF_BINS < sf_max if distribution == "uniform" else SF_BINS <= sf_max)[0]
    above = np.where(SF_BINS >= sf_min)[0]
    if len(below) == 0 or len(above) == 0 or below[-1] <= above[0]:
        raise ValueError(
            f"sf_min={sf_min} / sf_max={sf_max} leave no spatial-frequency bin of {SF_BINS}"
        )
    return int(above[0]), int(below[-1])


class VOneParams(PluginParams):
    simple_channels: int = Field(
        default=32, ge=0, le=4096, description="Simple cells (paper: 256)."
    )
    complex_channels: int = Field(
        default=32, ge=0, le=4096, description="Complex cells (paper: 256)."
    )
    ksize: int = Field(
        default=15,
        ge=3,
        le=129,
        description="Gabor kernel size in px, odd (paper: 25 at 224 px / 8 deg; 15 is the same "
        "0.9 deg at 16 px / deg).",
    )
    stride: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Stride of the filter bank (paper: 4 at 28 px / deg; 2 at 16 px / deg).",
    )
    visual_degrees: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Field of view of the input image in degrees of visual angle; sets the "
        "pixels per degree that convert the sampled cycles/deg to cycles/px (paper: 8 for "
        "224 px; default 1 for 16 px digits: 16 px / deg, highest filter 0.35 cycles/px).",
    )
    distribution: Literal["primate", "uniform"] = Field(
        default="primate",
        description="Gabor parameters from primate V1 histograms (paper) or uniform over the same "
        "ranges (the paper's ablation; vonenet rand_param).",
    )
    sf_corr: float = Field(
        default=0.75,
        ge=-1,
        le=1,
        description="Correlation between spatial frequency and envelope size nx (Gaussian "
        "copula; vonenet default 0.75).",
    )
    sf_min: float = Field(
        default=0.0, ge=0, description="Lowest spatial frequency in cycles/deg (vonenet: 0)."
    )
    sf_max: float = Field(
        default=6.0,
        gt=0,
        description="Highest spatial frequency in cycles/deg (vonenet: 6, i.e. bins up to 5.6).",
    )
    k_exc: float = Field(
        default=25.0, gt=0, description="Gain of simple and complex responses (paper: 25)."
    )
    noise_mode: Literal["neuronal", "gaussian", "none"] = Field(
        default="neuronal",
        description="Stochastic responses: Poisson-like 'neuronal' (paper), additive "
        "'gaussian', or 'none'.",
    )
    noise_scale: float = Field(
        default=0.35,
        gt=0,
        description="neuronal: responses are scaled by this before the Poisson-like noise "
        "(paper: 0.35); gaussian: the noise std.",
    )
    noise_level: float = Field(
        default=0.07,
        ge=0,
        description="neuronal: baseline added before the noise (spontaneous rate; paper: 0.07).",
    )
    at_inference: bool = Field(
        default=True,
        description="Keep the noise on at evaluation, as VOneNet (False: deterministic, the "
        "noise-free responses; the bioprior.benchmarks.adversarial.eot contract).",
    )
    bottleneck_channels: int | None = Field(
        default=16,
        ge=1,
        description="Output channels of the trained 1x1 convolution after the block (VOneNet: "
        "64); the model is built with this many input channels. None: the model's own "
        "in_channels.",
    )
    back_end_size: Literal["input", "strided"] = Field(
        default="input",
        description="'input': upsample the block's output back to the image size (the model "
        "keeps its input_size); 'strided': build the model for the block's output size "
        "(ceil(size / stride)), as VOneNet's back ends.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        description="Seed of the Gabor parameters (vonenet gabor_seed): the same seed gives the "
        "same bank whatever the training seed.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> VOneParams:
        if self.ksize % 2 == 0:
            raise ValueError("ksize must be odd (the kernel is centred on a pixel)")
        if self.simple_channels + self.complex_channels < 1:
            raise ValueError("simple_channels + complex_channels must be at least 1")
        _sf_range(self.distribution, self.sf_min, self.sf_max)
        return self


# -- Gabor parameters and kernels (numpy; no torch needed) -----------------------------------------


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


def _sample_hist(
    rng: np.random.RandomState, hist: np.ndarray, bins: np.ndarray, n: int, scale: str = "linear"
) -> np.ndarray:
    """Inverse-CDF sampling of a histogram, linear within a bin on a linear / log axis
    (vonenet ``utils.sample_dist``)."""
    cdf = np.hstack(([0.0], np.cumsum(hist)))
    u = rng.rand(n)
    if scale == "log2":
        return 2 ** np.interp(u, cdf, np.log2(bins))
    if scale == "log10":
        return 10 ** np.interp(u, cdf, np.log10(bins))
    return np.interp(u, cdf, bins)


def sample_gabor_params(
    n: int,
    seed: int = 0,
    distribution: str = "primate",
    sf_corr: float = 0.75,
    sf_max: float = 6.0,
    sf_min: float = 0.0,
    in_channels: int = 1,
) -> dict[str, np.ndarray]:
    """``n`` Gabor parameter sets: ``sf`` (cycles/deg), ``theta`` and ``phase`` (deg), ``nx``,
    ``ny`` (envelope SDs in cycles); Dapello et al.'s supplementary material, vonenet
    ``params.generate_gabor_param`` (same draws, same order, for the same seed). Then
    ``channel``, the input channel each filter reads (vonenet ``GFB.initialize``; drawn here
    from the same seeded generator)."""
    rng = np.random.RandomState(seed)
    lo, hi = _sf_range(distribution, sf_min, sf_max)
    sf_bins = SF_BINS[lo : hi + 1]
    if distribution == "uniform":
        ori_bins, ori_dist = np.array([0.0, 180.0]), np.array([1.0])
        n_bins, n_dist = np.array([0.1, 10**0.2]), np.array([1.0])
        sf_dist = np.ones(len(SF_COUNTS))[lo:hi]
    else:
        ori_bins, ori_dist = ORI_BINS, ORI_COUNTS / ORI_COUNTS.sum()
        joint = N_JOINT / N_JOINT.sum()
        n_bins, n_dist = N_BINS, joint.sum(axis=1) / joint.sum()
        sf_dist = SF_COUNTS[lo:hi]
    sf_dist = sf_dist / sf_dist.sum()

    phase = _sample_hist(rng, np.array([1.0]), np.array([0.0, 360.0]), n)
    theta = _sample_hist(rng, ori_dist, ori_bins, n)
    theta[theta < 0] += 180.0
    if distribution == "uniform":
        sf = _sample_hist(rng, sf_dist, sf_bins, n, "log2")
        nx = _sample_hist(rng, n_dist, n_bins, n, "log10")
        ny = _sample_hist(rng, n_dist, n_bins, n, "log10")
    else:
        z = rng.multivariate_normal([0.0, 0.0], [[1.0, sf_corr], [sf_corr, 1.0]], n)
        u = _normal_cdf(z)
        nx = 10 ** np.interp(u[:, 0], np.hstack(([0.0], n_dist.cumsum())), np.log10(n_bins))
        # ny given the nx bin (Ringach's joint histogram); the last nx bin has no cells, so a
        # round-off draw landing there uses the last populated row
        rows = N_JOINT / np.maximum(N_JOINT.sum(axis=1, keepdims=True), 1e-12)
        populated = int(np.where(N_JOINT.sum(axis=1) > 0)[0][-1])
        v = rng.rand(n)
        ny = np.empty(n)
        for i in range(n):
            row = min(int(np.argwhere(n_bins < nx[i])[-1, 0]), populated)
            ny[i] = np.interp(v[i], np.hstack(([0.0], rows[row].cumsum())), np.log10(n_bins))
        ny = 10**ny
        sf = 2 ** np.interp(u[:, 1], np.hstack(([0.0], sf_dist.cumsum())), np.log2(sf_bins))
    channel = rng.randint(0, in_channels, n)
    return {"sf": sf, "theta": theta, "phase": phase, "nx": nx, "ny": ny, "channel": channel}


def highest_sf(params: VOneParams) -> float:
    """The highest spatial frequency the bank can hold, in cycles/deg (a bin edge)."""
    return float(SF_BINS[_sf_range(params.distribution, params.sf_min, params.sf_max)[1]])


# -- the constraint -------------------------------------------------------------------------------


def _input(geometry: InputGeometry) -> tuple[int, int]:
    """The images' channels and size (the defaults where unknown, e.g. ``create_model``)."""
    return geometry.in_channels or DEFAULT_IN_CHANNELS, geometry.input_size or DEFAULT_INPUT_SIZE


class VOneBlockConstraint(Constraint):
    """Put a VOneBlock (and its trained 1x1 bottleneck) in front of the model."""

    requires_model_params = ("in_channels", "input_size")

    def configure(self, model_name: str, model_params: dict[str, Any]) -> dict[str, Any]:
        p: VOneParams = self.params
        missing = [k for k in self.requires_model_params if k not in model_params]
        if missing:
            raise ConstraintError(f"vone_block: model {model_name!r} has no {missing} parameter")
        _, size = _input(InputGeometry.of(model_name, model_params))
        top = highest_sf(p) * p.visual_degrees / size
        if top > 0.5:
            raise ConstraintError(
                f"vone_block: at {size} px over {p.visual_degrees} deg the highest Gabor "
                f"frequency is {top:.2f} cycles/px, above the Nyquist limit 0.5: lower "
                f"visual_degrees (<= {0.5 * size / highest_sf(p):.3g}) or sf_max"
            )
        out = dict(model_params)
        if p.bottleneck_channels is not None:
            out["in_channels"] = p.bottleneck_channels
        if p.back_end_size == "strided":
            out["input_size"] = (size - 1) // p.stride + 1
        return out

    def apply(self, module, geometry: InputGeometry = UNKNOWN_GEOMETRY):
        from torch import nn

        from bioprior.plugins.vone.nn import VOneBlock, VOneFrontEnd

        p: VOneParams = self.params
        in_channels, size = _input(geometry)
        width = p.bottleneck_channels or in_channels
        first = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None and first.in_channels != width:
            raise ConstraintError(
                f"vone_block: the model's first convolution takes {first.in_channels} channels, "
                f"not the bottleneck's {width} (does the model ignore in_channels? set "
                "bottleneck_channels: null)"
            )
        block = VOneBlock(p, in_channels, size)
        bottleneck = nn.Conv2d(block.out_channels, width, kernel_size=1, bias=False)
        nn.init.kaiming_normal_(bottleneck.weight, mode="fan_out", nonlinearity="relu")
        return VOneFrontEnd(block, bottleneck, module, upsample=p.back_end_size == "input")


@hookimpl
def register_constraints(register):
    register(
        name="vone_block",
        factory=VOneBlockConstraint,
        params=VOneParams,
        version="1",
        citation=DAPELLO2020,
        description="Fixed V1 front end (Gabor bank, simple/complex cells, Poisson-like noise) "
        "+ trained 1x1 bottleneck, in front of any model.",
    )
