"""Spectral analysis (evanson2022, Methods "Spectral analysis", Fig. 5B-C; Yin et al. 2019).

The submission's trained model is evaluated on its test images (as fitted to its input):

- **Band-pass** (Fig. 5C): each image is filtered in Fourier space, per channel, with a Gaussian
  band-pass gain exp(-(r - f)^2 / 2 sigma^2) on the radial frequency r (cycles per image),
  ``bandwidth`` its FWHM. The paper used 5 "Hz" (cycles per image) bands centred from 1 to 160
  on 224 px images (160 ~ the largest radius, 112 sqrt 2): ``centres`` and ``bandwidth`` are
  given at ``reference_size`` and scaled by size / reference_size; the bandwidth is at least
  ``min_bandwidth`` cycles per image (deviation: on small images a scaled 5/224 band would fall
  between the frequency bins).
- **Low-pass / high-pass sweeps**: ideal radial filters, cutoff a fraction of the largest radius;
  low-pass at 1.0 and high-pass at 0.0 pass everything (= clean accuracy).
  The DC bin (mean luminance) is kept by every filter (deviation, as in Geirhos et al.'s
  filtered images: otherwise band- and high-passed images are centred on 0 and clipped).
- **Spectral bandwidth of corruptions** (Fig. 5B): for each corruption and severity, the FWHM of
  the radially averaged amplitude spectrum (mean-subtracted gray image, DC bin ignored) of the
  corrupted image over that of the clean image, averaged over images, with the accuracy on the
  same images, so corruption robustness can be plotted against it. Under 32 px the corrupted
  images went through an up/down-sampling round trip (see ``corruption``): the reference is then
  the clean image after that round trip alone (``bandwidth_reference``). The corrupted sets are the
  ``corruption`` benchmark's (same transform and cache: computed once for both).
- **Fourier heat map** (beyond the papers; Yin et al. 2019): error rate under additive noise
  r * eps * U_ij along each Fourier basis image U_ij (unit L2 norm, r = +-1 per image and
  channel), eps = ``heatmap_rms`` x sqrt(C H W); Yin et al. used L2 norm 4 on CIFAR-10
  (32 x 32 x 3), i.e. an RMS of 4 / sqrt(3072) = 0.072 per pixel.

``correct``: which test images were classified correctly, clean (``correct["clean"]``) and
under each filter (``correct["bandpass" | "lowpass" | "highpass"][level]``, the level as the
condition's: the band centre in cycles per image, the cutoff as a fraction), each ``{"n",
"bits"}`` (``bioprior.plugin.pack_correct``); the report's error consistency is computed from it.

Score: ``clip(mean band-pass accuracy / clean accuracy, 0, 1)``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from bioprior.benchmarks.corruption import CORRUPTIONS
from bioprior.plugin import Benchmark, BenchmarkResult, PluginParams, Work, hookimpl

CITATION = "Evanson et al. (2022); Hendrycks & Dietterich (2019), ICLR; Yin et al. (2019), NeurIPS"


class SpectralParams(PluginParams):
    centres: list[float] = Field(
        default=[1.0 + 5 * i for i in range(32)],
        min_length=1,
        description="Band centres in cycles per image at reference_size (evanson: 1 to 160 by 5).",
    )
    bandwidth: float = Field(
        default=5.0, gt=0, description="Band FWHM in cycles per image at reference_size (5)."
    )
    reference_size: int = Field(
        default=224, ge=8, description="Image size the centres and bandwidth refer to (224 px)."
    )
    min_bandwidth: float = Field(
        default=1.0, gt=0, description="Smallest band FWHM in cycles per image after scaling."
    )
    lowpass_cutoffs: list[float] = Field(
        default=[0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0],
        description="Low-pass cutoffs, fractions of the largest radial frequency (1.0: all).",
    )
    highpass_cutoffs: list[float] = Field(
        default=[0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75],
        description="High-pass cutoffs, fractions of the largest radial frequency (0.0: all).",
    )
    bandwidth_corruptions: list[str] = Field(
        default=list(CORRUPTIONS),
        description="Corruptions whose spectral bandwidth is measured (evanson Fig. 5B; [] skips).",
    )
    bandwidth_severities: list[int] = Field(
        default=[1, 2, 3, 4, 5], description="Their severities (Fig. 5B used severity 5)."
    )
    preset: Literal["auto", "imagenet_c", "cifar10_c"] = Field(
        default="auto", description="imagecorruptions severity constants (as corruption's)."
    )
    fourier_heatmap: bool = Field(default=True, description="Compute the Fourier heat map.")
    heatmap_rms: float = Field(
        default=0.072,
        gt=0,
        description="RMS per pixel of the Fourier-basis noise (Yin: 4/sqrt(3072)).",
    )
    heatmap_images: int = Field(default=100, ge=1, description="Test images per frequency.")
    heatmap_stride: int = Field(default=1, ge=1, description="Use every k-th frequency per axis.")
    max_images: int | None = Field(
        default=None, ge=1, description="Evaluate on a seeded subset of this many test images."
    )
    workers: int | None = Field(
        default=None, ge=0, description="Processes generating stimuli (None: all cores)."
    )
    batch_size: int = Field(default=1024, ge=1, description="Evaluation batch size.")

    @field_validator("lowpass_cutoffs", "highpass_cutoffs")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(x < 0 or x > 1 for x in v):
            raise ValueError("cutoffs are fractions in [0, 1]")
        return v

    @field_validator("bandwidth_corruptions")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(CORRUPTIONS))
        if unknown:
            raise ValueError(f"unknown corruptions {unknown}")
        return v

    @field_validator("bandwidth_severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        if any(s not in (1, 2, 3, 4, 5) for s in v):
            raise ValueError("severities must be in 1..5")
        return v


class Spectral(Benchmark):
    def work(self, needs) -> Work:
        """Per test image: the clean pass, one per filter and one per corruption whose bandwidth
        is measured; the filtered sets generated first (``preview`` makes them). Not counted (a
        floor): the Fourier heat map (``heatmap_images`` per frequency, about 5% of the passes at
        28 px on 10,000 images), the spectral bandwidth of each corrupted set (an FFT per image,
        computed by the seed's first run and cached beside the set: about a fifth of that run)
        and generating the corrupted sets where ``corruption`` has not cached them for the seed."""
        p = self.params
        filters = len(p.centres) + len(p.lowpass_cutoffs) + len(p.highpass_cutoffs)
        corrupted = len(p.bandwidth_corruptions) * len(p.bandwidth_severities)
        return Work(forward=1 + filters + corrupted, images=p.max_images, stimuli=True)

    def stimuli_cached(self, data, seed: int) -> float:
        from .fourier import filtered_set

        return filtered_set(self.params, data, seed).cached_share()

    def run(self, ctx) -> BenchmarkResult:
        from . import fourier

        return fourier.run(self.params, ctx)

    def preview(self, images, seed: int):
        from . import fourier

        return fourier.preview(self.params, images, seed)


@hookimpl
def register_benchmarks(register):
    register(
        name="spectral",
        factory=Spectral,
        params=SpectralParams,
        version="2",  # 2: preset auto; CIFAR-10-C's own elastic_transform
        citation=CITATION,
        description="Band-pass / low- / high-pass accuracy, corruption bandwidth, Fourier heat map.",
        extra={"score": "mean band-pass accuracy / clean accuracy, in [0, 1]"},
    )
