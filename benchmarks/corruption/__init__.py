"""Common corruptions and noise sweeps (Hendrycks & Dietterich 2019 via ``imagecorruptions``;
evanson2022 Methods "Real-world corruptions", Fig. 5A; tsvetkov2020 "Generalization tests",
Exp. 3; li2019 Sec. 4.1; safarani2021 Sec. 3, robustness score).

The submission's trained model is evaluated on its own test images (as fitted to its input)
under every condition:

- ``imagecorruptions``: the 19 corruptions (15 ImageNet-C + 4 extra) at severities 1-5, through
  ``imagecorruptions_compat`` (``preset``: ImageNet-C's constants or CIFAR-10-C's milder ones).
  Images are converted to uint8 H x W x RGB (gray repeated) and back to gray with luma weights;
  images under 32 px are upsampled (bilinear) to 32 px, corrupted and resized back (the library
  rejects smaller images; the metrics say so in ``note``).
- ``identity`` (severity 0): no change, through the same cache and evaluation path. For images
  under 32 px, ``upsampling_round_trip`` (the resampling alone) is reported as well.
- noise sweeps: Geirhos et al. (2018) ``uniform_noise`` (width w: U(-w, w) added) and
  ``salt_and_pepper`` (each pixel black or white with probability p/2 each), both after Geirhos'
  grayscale + contrast reduction (``geirhos_contrast``), levels 0-0.5 by 0.05 (tsvetkov2020
  calls the uniform width its "variance"); additive Gaussian noise at a std grid
  (``gaussian_noise_std``, li2019 Fig. 4; [0, 1] pixel units).

Stimulus sets are generated once per (test images, condition, seed) in parallel and cached as
uint8 under ``$BIOPRIOR_HOME/stimuli`` (``benchmarks/stimuli.py``); every model with the same
fitted test images reuses them. ``precomputed`` reads a CIFAR-10-C style folder instead.

Metrics: ``accuracy[name][level]``, ``clean_acc`` (on the same uint8-quantized images),
``corruption_acc`` (per corruption, mean over severities), ``category_acc`` (evanson Table 1),
``mean_corruption_acc`` (mCA: mean over the imagecorruptions x severities run); ``correct``:
which test images were classified correctly, ``correct["clean"]`` and ``correct[name][level]``
(as ``accuracy``), each ``{"n", "bits"}`` (``bioprior.plugin.pack_correct``: packed bits in
base64, 1,668 characters per condition for 10,000 images; the baseline's under
``baseline.correct``), from which the report computes error consistency (Geirhos et al. 2020).

**Named baseline** (the chosen reading of "a named baseline submission variant"): ``baseline``
names a model spec, ``{model: {name, params} | null, constraints: [...]}``; the default is the
submission's own model with *no* constraints. It is trained with the submission's recipe,
dataset and seed (``ctx.trained``; cached by content, so shared across jobs) and scored on the
same stimuli. Against it: ``ce`` / ``mce`` and ``relative_ce`` / ``relative_mce`` (Hendrycks &
Dietterich: CE_c = sum_s E_s,c / sum_s E^base_s,c; relative CE subtracts each model's clean error
first) and safarani2021's ``robustness_score`` = mean over corruptions of A_c / A^base_c.
``baseline: null`` skips it.

Score: ``clip(mean_corruption_acc / clean_acc, 0, 1)`` (mCA relative to clean accuracy; over
the noise sweeps when no imagecorruptions are selected).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from bioprior.plugin import Benchmark, BenchmarkResult, PluginParams, Work, hookimpl

from .imagecorruptions_compat import CORRUPTIONS

# The 15 ImageNet-C corruptions + 4 extra, as the compatibility module names them (it imports only
# the standard library at module level, so listing plugins stays light).
CorruptionName = Literal[("identity", *CORRUPTIONS)]
CITATION = (
    "Hendrycks & Dietterich (2019), ICLR; Evanson et al. (2022); Tsvetkov, Malhotra & Bowers "
    "(2020); Geirhos et al. (2018), NeurIPS; Li et al. (2019), NeurIPS; Safarani et al. (2021)"
)


class PluginSpec(PluginParams):
    name: str = Field(description="Registered plugin name.")
    params: dict[str, Any] = Field(default_factory=dict, description="Its parameters.")


class BaselineSpec(PluginParams):
    model: PluginSpec | None = Field(
        json_schema_extra={"plugin_kind": "model"},
        default=None,
        description="Baseline model {name, params}; null: the submission's model.",
    )
    constraints: list[PluginSpec] = Field(
        json_schema_extra={"plugin_kind": "constraint"},
        default_factory=list,
        description="Constraints of the baseline (default: none).",
    )


class CorruptionParams(PluginParams):
    corruptions: list[CorruptionName] = Field(
        default=list(CORRUPTIONS),
        description="imagecorruptions to run (all 19 by default), and/or 'identity' (severity 0).",
    )
    severities: list[int] = Field(
        default=[1, 2, 3, 4, 5], min_length=1, description="Severities 1-5 of imagecorruptions."
    )
    preset: Literal["auto", "imagenet_c", "cifar10_c"] = Field(
        default="auto",
        description="Severity constants: ImageNet-C's (the library's, for 224 px) or CIFAR-10-C's "
        "(32 px, milder); auto: CIFAR-10-C's for images up to 96 px, else ImageNet-C's.",
    )
    noise_sweeps: list[Literal["uniform_noise", "salt_and_pepper", "gaussian_noise_std"]] = Field(
        default=["uniform_noise", "salt_and_pepper", "gaussian_noise_std"],
        description="Noise sweeps: Geirhos' uniform / salt-and-pepper (tsvetkov2020), Gaussian std (li2019).",
    )
    geirhos_levels: list[float] = Field(
        default=[round(0.05 * i, 2) for i in range(11)],
        description="Uniform-noise width / salt-and-pepper probability (tsvetkov2020: 0 to 0.5 by 0.05).",
    )
    geirhos_contrast: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Contrast of Geirhos et al.'s grayscale images before noise (1: unchanged).",
    )
    gaussian_noise_stds: list[float] = Field(
        default=[0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2],
        description="Std of additive Gaussian noise in [0, 1] pixel units (li2019 Sec. 4.1).",
    )
    baseline: BaselineSpec | None = Field(
        default_factory=BaselineSpec,
        description="Baseline for mCE and the robustness score (default: own model, no constraints).",
    )
    precomputed: str | None = Field(
        default=None,
        description="Folder of CIFAR-10-C style '<corruption>.npy' + 'labels.npy' to use instead.",
    )
    max_images: int | None = Field(
        default=None, ge=1, description="Evaluate on a seeded subset of this many test images."
    )
    workers: int | None = Field(
        default=None,
        ge=0,
        description="Processes generating stimuli (None: all cores, 0/1: serial).",
    )
    batch_size: int = Field(default=1024, ge=1, description="Evaluation batch size.")

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        if any(s not in (1, 2, 3, 4, 5) for s in v):
            raise ValueError("severities must be in 1..5")
        return v

    @field_validator("geirhos_levels", "gaussian_noise_stds")
    @classmethod
    def _levels(cls, v: list[float]) -> list[float]:
        if any(x < 0 or x > 1 for x in v):
            raise ValueError("levels must be in [0, 1]")
        return v


class Corruption(Benchmark):
    def trainings(self, needs):
        from .run import baseline_model

        own = [needs.trained()]
        return own + [baseline_model(self.params, needs)] if self.params.baseline else own

    def work(self, needs) -> Work:
        """Per test image: the clean pass and one per condition (with the resampling round trip
        of images under 32 px), for its model and the baseline's (counted on the scored model),
        and the float clean accuracy's pass; the stimuli generated first (``preview`` makes
        them). Precomputed sets are counted as generated: a ceiling there."""
        from .run import conditions

        per_model = len(conditions(self.params)) + 2
        models = 2 if self.params.baseline is not None else 1
        return Work(forward=per_model * models + 1, images=self.params.max_images, stimuli=True)

    def stimuli_cached(self, data, seed: int) -> float:
        from .run import stimulus_set

        return stimulus_set(self.params, data, seed).cached_share()

    def run(self, ctx) -> BenchmarkResult:
        from . import run

        return run.run(self.params, ctx)

    def preview(self, images, seed: int):
        from . import run

        return run.preview(self.params, images, seed)


@hookimpl
def register_benchmarks(register):
    register(
        name="corruption",
        factory=Corruption,
        params=CorruptionParams,
        version="2",  # 2: preset auto by image size; CIFAR-10-C's own elastic_transform
        citation=CITATION,
        description="19 common corruptions x 5 severities and noise sweeps; mCE, robustness score.",
        extra={"score": "mean accuracy under corruption / clean accuracy, in [0, 1]"},
    )
