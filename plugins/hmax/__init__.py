"""HMAX (Riesenhuber & Poggio 1999; Serre et al. 2007) as evanson trained it, plain and Flexible.

evanson (Fig. 2C, Fig. 4A, Methods "We also insert the Flexible Layer into the HMAX model",
Supporting information "HMAX Model") uses wmvanvliet/pytorch_hmax with learned S2 prototypes and a
linear classifier on C2, trained on FMNIST. The stages follow pytorch_hmax:

* S1: fixed Gabor filters (pytorch_hmax ``gabor_filter``: lambda = 2 size / wavelength,
  sigma = 0.8 lambda, aspect 0.3, circular mask, zero mean, unit norm) at ``2 * bands`` sizes
  (7, 9, ..., 37 px for 8 bands; relative wavelengths 4, 3.95, ..., 3.25) and 4 orientations
  (90, -45, 0, 45; 0 = vertical bars), ``|conv|`` divided by the local image energy (buffers, not
  trained).
* C1: band ``b`` takes the max over S1 scales ``2b`` and ``2b + 1``, then a max-pool of size
  8 + 2b (the paper's kernel sizes 8, 10, ..., 22), stride size // 2, padding size // 2.
* S2: for each patch size (pytorch_hmax's universal patch set: 4, 8, 12, 16 C1 units) one set of
  ``num_prototypes`` prototypes over the 4 orientations, shared by every C1 band, learned by
  back-propagation (the paper: "a convolutional filter that is learned during training"); the
  response is the Gaussian ``exp(-d^2 / (2 sigma^2 n))`` of the Euclidean distance d between a
  C1 patch and a prototype (``n`` = values per patch), or ``-d`` (``s2_activation: euclidean``,
  the Georgetown MATLAB code).
* C2: per prototype, the global max over positions and C1 bands; a linear layer gives the classes.
  Deviation (``c2_norm``, default on): each image's C2 vector is standardized first (LayerNorm
  without affine parameters). C2 responses all lie in (0, 1] and move together, and a linear layer
  on them barely trains with SGD (digits, 6 epochs: 38 % test accuracy, 90 % standardized); classic
  HMAX normalizes C2 features before its SVM. Per image rather than BatchNorm, whose running
  statistics lagged the drifting C2 of the flexible variants (train 95 %, eval 73 %).

Variants (Fig. 4A): ``baseline`` (unmodified HMAX), ``flexible`` (Flexible Layers, Eq. 1, in C1
and S2; thresholds as in :mod:`bioprior.plugins.flexible_layer`) and ``convolutional`` (the same
Flexible Layers with threshold ``conv``: "Flexible Layers executing convolution in the C1 and S2
layers"). Where the Flexible Layer enters (the paper gives no more than Fig. 2C):

* C1 (a max-pool): the pooling (after the max over the band's two scales) becomes
  ``FlexibleLayer(Conv2d(4, 4, k, k // 2, k // 2), MaxPool2d(k, k // 2, k // 2))``: a learned
  convolution with the pool's geometry runs in parallel; one layer per band.
* S2 (a distance to prototypes, computed with convolutions): the distance layer is the
  "convolution" of Eq. 1; the parallel max-pool is the max over the unit's whole receptive field
  (the k x k window and the 4 orientations: the OR over the same afferents), the same value for
  every prototype. Prototypes are shared by the bands as in HMAX, thresholds are per unit, so
  there is one Flexible Layer per (patch size, band); each wraps a weightless view of its size's
  prototypes (``PrototypeView``), so the weights are stored once.

Deviations and choices where the paper is silent:

* The paper counts "7 such units"; 8 C1 kernel sizes (its list) and 4 prototype sizes give 8 + 32
  Flexible Layers here (8 C1 sites, 4 S2 sites with per-band thresholds). The count 7 cannot be
  reconstructed from the paper.
* Prototypes are initialized uniformly in [0, 1] (C1's range) instead of being sampled from C1
  responses to training images (classic HMAX; the factory does not see the data).
* The Gaussian's sigma is per value (``s2_sigma``, on the root-mean-square distance) so that
  large patches do not saturate to 0; pytorch_hmax uses sigma = 1 on the summed distance.
* Small inputs: S1 filter sizes and C1 pool sizes are scaled by ``filter_scale`` (default
  input_size / 28, so 28 px FMNIST gets exactly the paper's sizes; S1 sizes rounded to odd,
  >= 3; pools >= 2). Prototype sizes are in C1 units and are not scaled (C1 maps have about the
  same size at every input size).
* The net receives standardized images (``Normalized``): S1 averages the channels to one gray
  channel and pads by replicating the border (pytorch_hmax: zero padding on [0, 1] images, which
  would draw an edge around standardized images); the local energy normalization makes S1
  invariant to the contrast scale.
* S2 distances run in float32 even under bf16 autocast (a difference of large numbers). At the
  paper's geometry (C1 maps of 3-8 units, patches of 4-16) S2 runs band by band and slides the
  small maps over the prototypes (``nn.correlate``): the same sums as ``F.conv2d`` with zero
  padding, in another order (docs/performance.md, "HMAX (Fig. 4A) on a CPU").
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from bioprior.plugin import ImageModelParams, hookimpl

EVANSON = (
    "Evanson, Lavrov, Kharitonov, Lu & Kozlov, Biomimetic computations improve neural network "
    "robustness (Flexible HMAX, Fig. 2C / 4A); Serre, Oliva & Poggio (2007) PNAS 104:6424; "
    "Riesenhuber & Poggio (1999) Nat. Neurosci. 2:1019; van Vliet, pytorch_hmax (2020)"
)


# -- registration -----------------------------------------------------------------------------
class HmaxParams(ImageModelParams):
    variant: Literal["baseline", "convolutional", "flexible"] = Field(
        default="baseline",
        description="baseline: unmodified HMAX; flexible: Flexible Layers (Eq. 1) in C1 and S2; "
        "convolutional: the same layers always convolving (evanson's Convolutional Baseline).",
    )
    threshold: Literal["learned", "uniform", "random", "conv", "pool"] = Field(
        default="learned",
        description="Flexible Layer threshold mode of the flexible variant (learned per unit, "
        "uniform = threshold_init, random 0/1 per pass, conv, pool).",
    )
    threshold_init: float = Field(
        default=0.5,
        allow_inf_nan=False,
        description="Initial learned / fixed uniform threshold (C1 and S2 values lie in [0, 1]).",
    )
    reverse: bool = Field(
        default=False, description="Flexible Layers max-pool above the threshold (Table 2)."
    )
    sharpness: float = Field(default=50.0, gt=0, description="Sigmoid scale s of Eq. 1.")
    at_inference: bool = Field(
        default=True, description="Random thresholds keep changing at evaluation (paper: yes)."
    )
    bands: int = Field(
        default=8, ge=1, le=8, description="C1 bands (2 S1 scales each; paper: 8, pools 8..22)."
    )
    patch_sizes: tuple[Annotated[int, Field(ge=1, le=64)], ...] = Field(
        default=(4, 8, 12, 16),
        min_length=1,
        description="S2 prototype sizes in C1 units (pytorch_hmax's universal patch set).",
    )
    num_prototypes: int = Field(
        default=400, ge=1, le=4096, description="Learned S2 prototypes per patch size."
    )
    filter_scale: float | None = Field(
        default=None,
        gt=0,
        le=8,
        description="Factor on S1 filter and C1 pool sizes (None: input_size / 28, the paper's "
        "sizes on 28 px FMNIST).",
    )
    s2_activation: Literal["gaussian", "euclidean"] = Field(
        default="gaussian",
        description="S2 response: Gaussian of the distance (Serre 2007) or its negative.",
    )
    s2_sigma: float = Field(
        default=0.3, gt=0, description="Gaussian width on the per-value RMS distance."
    )
    c2_norm: bool = Field(
        default=True,
        description="Standardize each image's C2 vector (LayerNorm, no affine) before the linear "
        "classifier; false: the linear layer on raw C2 (trains poorly with SGD).",
    )


@hookimpl
def register_models(register):
    register(
        name="hmax",
        factory="bioprior.plugins.hmax.nn:HMAX.from_params",
        params=HmaxParams,
        version="1",
        citation=EVANSON,
        description="HMAX (Gabor S1, C1 max-pool, learned S2 prototypes, C2, linear); variants "
        "baseline | convolutional | flexible (Flexible Layers in C1 and S2, evanson Fig. 2C).",
        # seeds batch; variants differ in structure (Flexible Layers or not), so they do not
        extra={"batch": []},
    )
