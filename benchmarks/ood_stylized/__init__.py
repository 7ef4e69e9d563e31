"""Out-of-distribution stylized images (evanson2022 Results, Fig. 6, after Evans, Malhotra &
Bowers 2022; Geirhos et al. 2019, 2021).

Procedural renderings of the dataset's own test images (as fitted to the model's input), drawn
at ``render_size`` px and resized back (small images give poor renderings otherwise):

- ``edges``: Canny edges (scikit-image ``feature.canny``, sigma ``canny_sigma`` at 64 px).
- ``silhouette``: the Otsu-thresholded foreground (the side away from the background, taken as
  the median border pixel), holes filled (``scipy.ndimage.binary_fill_holes``), uniform.
- ``contours``: the outline of that silhouette (mask minus its binary erosion).
- ``line_drawing``: XDoG lines (Winnemöller et al. 2012: difference of Gaussians sigma,
  1.6 sigma, tau 0.98, soft threshold phi 200 at eps = -0.5 std of the response).
- ``phase_scrambled``: amplitude spectrum kept, phase plus ``phase_strength`` x the phase of
  white noise (same noise for every channel).
- ``amplitude_swapped``: phase of the image with the amplitude spectrum of another test image
  (the one n/2 further in the set; label: the phase image's class).

Ink polarity: ``dataset`` draws light lines / shapes on a dark background when the image's
background is dark (digits, MNIST) and dark on light otherwise (Evans et al., Geirhos et al.).

External sets (``external``): folders in ImageFolder layout (``<path>/<class>/<image>``), e.g.
Evans, Malhotra & Bowers' CIFAR-10 contours / line drawings / silhouettes, or model-vs-human's
sketch / stylized / edge / silhouette / cue-conflict. ``class_map`` maps folder classes onto
the model's classes (a name, an index or a list; default: equal names); with several model
classes per set class, the decision is the set class with the highest mean probability over
its model classes (as model-vs-human aggregates ImageNet classes). On cue-conflict images
(``cue_conflict: true``, files ``<shape><n>-<texture><m>.png`` in the shape's folder), the
shape bias = shape decisions / (shape + texture decisions), conflicting images only (Geirhos
et al. 2019). A missing folder fails the job with where to get the set and how to lay it out.

Human trials (``human_trials``): CSV files in model-vs-human's raw-data layout (``subj, session,
trial, rt, object_response, category, condition, imagename``; see ``humans.py``) of people
classifying this set's images; each trial is matched to a folder image by ``imagename``. Per
condition the model is compared with each subject on the images that subject saw: error
consistency (Cohen's kappa, Geirhos, Meding & Wichmann 2020) averaged over the subjects, and
model-vs-human's accuracy difference (squared, averaged over the subjects), stored under
``external[name].human``. A CSV without a needed column, or a trial whose image is not in the
folder, is a one-line error naming the file and the field (when the submission is checked if the
files are there, else when the job runs).

``correct``: which images were classified correctly, clean (``correct["clean"]``), per rendering
(``correct[style]``) and per external set (``correct["external"][name]``, in the folder's
sorted order), each ``{"n", "bits"}`` (``bioprior.plugin.pack_correct``); the report's error
consistency with the baseline is computed from it.

Score: mean accuracy over the styles and external sets (not relative to clean accuracy).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_serializer

from bioprior.plugin import Benchmark, BenchmarkResult, PluginParams, Work, hookimpl

from . import humans

Style = Literal[
    "edges", "contours", "line_drawing", "silhouette", "phase_scrambled", "amplitude_swapped"
]
CITATION = (
    "Evanson et al. (2022); Evans, Malhotra & Bowers (2022), Neural Networks; Geirhos et al. "
    "(2019), ICLR; Geirhos et al. (2021), NeurIPS"
)


class ExternalSet(PluginParams):
    name: str = Field(description="A label for the set, e.g. 'silhouettes'.")
    path: str = Field(
        json_schema_extra={"file": "image_folder"},
        description="Folder in ImageFolder layout: <path>/<class>/<image>.",
    )
    source: Literal["evans2022", "model_vs_human", "folder"] = Field(
        default="folder", description="Where it comes from (for the message when it is missing)."
    )
    class_map: dict[str, str | int | list[str | int]] | None = Field(
        default=None,
        description="Folder class -> model class name / index / list (default: equal names).",
    )
    cue_conflict: bool = Field(
        default=False, description="Cue-conflict images: also report the shape bias."
    )
    human_trials: list[str] | None = Field(
        default=None,
        description="CSV files (or folders of them) of human trials on this set in "
        "model-vs-human's raw-data layout: also report model-vs-human error consistency.",
    )

    @field_validator("human_trials")
    @classmethod
    def _human_trials(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("give at least one CSV file or folder (or leave it out)")
            if "path" in info.data:
                humans.check(v, info.data["path"])
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        # left out while unset, so sets scored before the field existed keep their job keys
        out = handler(self)
        if out.get("human_trials") is None:
            out.pop("human_trials", None)
        return out


class OODParams(PluginParams):
    styles: list[Style] = Field(
        default=[
            "edges",
            "contours",
            "line_drawing",
            "silhouette",
            "phase_scrambled",
            "amplitude_swapped",
        ],
        description="Procedural renderings of the test images.",
    )
    polarity: Literal["dataset", "dark_on_light", "light_on_dark"] = Field(
        default="dataset", description="Ink polarity of edges / contours / drawings / silhouettes."
    )
    render_size: int = Field(default=64, ge=8, description="Side (px) the renderings are drawn at.")
    canny_sigma: float = Field(default=2.0, gt=0, description="Canny sigma at 64 px.")
    xdog_sigma: float = Field(default=2.5, gt=0, description="XDoG sigma at 64 px.")
    phase_strength: float = Field(
        default=1.0, ge=0, le=1, description="Weight of the random phase (1: fully scrambled)."
    )
    external: list[ExternalSet] = Field(
        default_factory=list, description="External ImageFolder sets to score as well."
    )
    max_images: int | None = Field(
        default=None, ge=1, description="Evaluate on a seeded subset of this many test images."
    )
    workers: int | None = Field(
        default=None, ge=0, description="Processes generating stimuli (None: all cores)."
    )
    batch_size: int = Field(default=1024, ge=1, description="Evaluation batch size.")


class OODStylized(Benchmark):
    def work(self, needs) -> Work:
        """Per test image: the clean pass and one per style; the renderings generated first
        (``preview`` makes them). External sets are not counted (their size is known only
        when the job runs): a floor where there are any."""
        return Work(
            forward=1 + len(self.params.styles), images=self.params.max_images, stimuli=True
        )

    def stimuli_cached(self, data, seed: int) -> float:
        from .renderings import rendered_set

        return rendered_set(self.params, data, seed).cached_share()

    def run(self, ctx) -> BenchmarkResult:
        from . import renderings

        return renderings.run(self.params, ctx)

    def preview(self, images, seed: int):
        from . import renderings

        return renderings.preview(self.params, images, seed)


@hookimpl
def register_benchmarks(register):
    register(
        name="ood_stylized",
        factory=OODStylized,
        params=OODParams,
        version="1",
        citation=CITATION,
        description="Edges, contours, line drawings, silhouettes, phase/amplitude; external sets.",
        extra={"score": "mean accuracy over the renderings and external sets"},
    )
