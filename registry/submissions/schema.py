"""The submission schema (pydantic): the YAML a researcher writes, field by field.

``bioprior schema submission`` prints it as JSON Schema; the field descriptions are the docs.
Plugin parameters are validated later against each plugin's own schema (see ``submission.py``).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
#: plugin names as entries register them (``small_alexnet``, ``timm:resnet18``)
PLUGIN_NAME_PATTERN = r"^[^\W_][\w.:\-]*$"
MAX_NAME = 128
MAX_SEED = 2**32 - 1  # numpy's and torch's seed range; SQLite stores it exactly
#: a plugin parameter that names another plugin is marked ``Field(json_schema_extra={PLUGIN_KIND:
#: kind})`` (plus ``"params_field": name`` for a bare name whose parameters sit beside it), or its
#: ``{name, params}`` model has a ``plugin_kind`` class variable; ``validate`` resolves it
PLUGIN_KIND = "plugin_kind"
MAX_SWEEP_KEY = 500

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PluginRef(Strict):
    """A plugin by name, with parameters validated against that plugin's schema."""

    name: str = Field(
        max_length=MAX_NAME,
        pattern=PLUGIN_NAME_PATTERN,
        description="Registered plugin name (see `bioprior plugins`).",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters; `bioprior schema KIND NAME` lists them."
    )

    @classmethod
    def coerce(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class ConstraintRef(PluginRef):
    enabled: bool = Field(
        default=True, description="Apply this constraint; sweep it to compare with and without."
    )


class Schedule(Strict):
    """Learning-rate schedule, stepped once per epoch."""

    name: Literal["constant", "inverse_time", "exponential", "step", "cosine"] = Field(
        default="constant",
        description="constant; inverse_time: lr/(1+decay*epoch) (tsvetkov2020's Keras decay, "
        "applied per epoch); exponential: lr*gamma^epoch; step: lr*gamma^(epoch//step_size); "
        "cosine: annealed to 0 over the epochs.",
    )
    decay: float = Field(default=0.0, ge=0, description="Decay rate of inverse_time.")
    gamma: float = Field(default=0.1, gt=0, le=1, description="Factor of exponential and step.")
    step_size: int = Field(default=30, ge=1, description="Epochs between steps of `step`.")


class TrainingRecipe(Strict):
    """How the model is trained; every field is part of the trained model's content key."""

    dataset: PluginRef = Field(
        description="Training dataset (a dataset plugin; a bare name works)."
    )
    epochs: int = Field(default=10, ge=0, le=10_000, description="Passes over the training set.")
    batch_size: int = Field(default=128, ge=1, le=65_536, description="Examples per step.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field(default="sgd", description="Optimizer.")
    lr: float = Field(default=0.01, gt=0, le=10, description="Initial learning rate.")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(default=0.0, ge=0, le=1, description="L2 weight decay.")
    schedule: Schedule = Field(default_factory=Schedule, description="Learning-rate schedule.")
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="bf16 autocast where bf16 is the faster arithmetic (CUDA; a CPU with AMX, or "
        "with AVX-512 BF16 where BIOPRIOR_CPU_BF16=1); fp32 elsewhere. The training's history "
        "records which ran.",
    )
    augment: list[Literal["hflip", "crop"]] = Field(
        default_factory=list,
        description="Training-batch augmentations, seeded: hflip (random horizontal flip, p = 0.5; "
        "evanson's CIFAR recipe), crop (zero-pad by size/8 and random crop back, the usual CIFAR "
        "translation).",
    )

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_name(cls, value: Any) -> Any:
        return PluginRef.coerce(value)


SweepGrid = dict[Annotated[str, Field(max_length=MAX_SWEEP_KEY)], list[Any]]


class StepLimits(Strict):
    """Per-step limits of a submission's jobs (the command line's --timeout / --memory-limit /
    --retries override them). A limit runs each step in its own process."""

    timeout_s: float | None = Field(
        default=None, gt=0, description="Wall-time limit per step in seconds (killed: timeout)."
    )
    memory: str | None = Field(
        default=None,
        pattern=r"^\s*[0-9]+(\.[0-9]+)?\s*([KMGTkmgt]i?[Bb]?)?\s*$",
        description="Memory limit per step, e.g. 4G or 512M (past it: out_of_memory).",
    )
    retries: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Retries of a step that timed out, crashed or ran "
        "out of memory (a plugin's exception is not retried: it would fail the same way).",
    )


# -- reference: the paper's numbers ------------------------------------------------------------
#: a dotted path to a number in a stored result (``clean_accuracy``), or ``CURVE@EPSILON`` (the
#: accuracy of a curve of the adversarial benchmark at one of its epsilons: ``fgsm@0.1``)
METRIC_PATTERN = (
    r"^(?:[A-Za-z_][\w\-]*(?:\.[\w\-]+)*|[A-Za-z_][\w\-]*@(?:\d+(?:\.\d*)?|\.\d+)"
    r"(?:[eE][+\-]?\d+)?)$"
)
MAX_SELECTOR = 50
#: a sweep of more points than this is not matched against (loading refuses most of them: see
#: ``loading.max_sweep_points``)
MAX_MATCH_POINTS = 100_000

VariantSelector = Annotated[
    dict[Annotated[str, Field(max_length=MAX_SWEEP_KEY)], Any], Field(max_length=MAX_SELECTOR)
]


class ReferenceEntry(Strict):
    """One published number and the stored measurement it is compared with."""

    variant: VariantSelector = Field(
        default_factory=dict,
        description="The variant it belongs to, by its sweep values: `{path: value}`, a path "
        "written whole (`constraints.0.params.threshold`) or as a suffix that names one swept "
        "path (`threshold`, as `bioprior results` shows it). It must match exactly one variant; "
        "leave it out when the submission has no sweep.",
    )
    minus: VariantSelector | None = Field(
        default=None,
        description="A difference between two variants: `value` is the paper's `variant` minus "
        "this one (e.g. 'beats the baseline by 6 %'), compared with the difference of the "
        "measured means. Selected like `variant`.",
    )
    benchmark: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        pattern=PLUGIN_NAME_PATTERN,
        description="The benchmark whose stored result holds the measurement: one of the "
        "submission's `benchmarks` (which must list it once); may be left out when there is "
        "only one.",
    )
    metric: str = Field(
        max_length=200,
        pattern=METRIC_PATTERN,
        description="The measured number: a dotted path into the benchmark's stored metrics, "
        "as `bioprior results` lists them (`clean_accuracy`, `robust_accuracy`, "
        "`median_minimal_l2`, `natural_test_acc`), or `CURVE@EPSILON` for the adversarial "
        "benchmark: the accuracy under that curve's attack run at exactly that epsilon "
        "(`fgsm@0.1`; `transfer@EPS` is the black-box curve).",
    )
    value: float = Field(description="The paper's number (mean over its runs), in `scale`.")
    sem: float | None = Field(
        default=None, gt=0, description="The paper's standard error of the mean, in `scale`."
    )
    sd: float | None = Field(
        default=None,
        gt=0,
        description="Or the paper's standard deviation over its `n` runs (SEM = sd / sqrt(n)).",
    )
    n: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="The paper's number of runs (needed with `sd`; shown otherwise).",
    )
    scale: Literal["percent", "fraction"] | None = Field(
        default=None, description="Overrides the reference's `scale` for this entry."
    )

    @model_validator(mode="after")
    def _one_uncertainty(self) -> ReferenceEntry:
        if self.sem is not None and self.sd is not None:
            raise PydanticCustomError("reference", "give `sem` or `sd`, not both")
        if self.sd is not None and (self.n is None or self.n < 2):
            raise PydanticCustomError(
                "reference", "`sd` needs the paper's `n` (2 or more): SEM = sd / sqrt(n)"
            )
        return self


class Reference(Strict):
    """The paper's numbers for this submission: shown beside the measured ones (``bioprior
    results --paper FILE`` and the report), with a verdict; never part of a job's key."""

    source: str = Field(
        min_length=1,
        max_length=500,
        description="Where the numbers are published, e.g. `evanson Table 2`.",
    )
    scale: Literal["percent", "fraction"] = Field(
        description="How the paper writes its numbers: `percent` (87.7 for an accuracy bioprior "
        "stores as 0.877: values and uncertainties are divided by 100 to compare) or `fraction` "
        "(the stored scale itself: accuracies as fractions, distances, correlations).",
    )
    entries: list[ReferenceEntry] = Field(
        min_length=1, max_length=500, description="One per published number."
    )


def _same(a: Any, b: Any) -> bool:
    """YAML values equal as a sweep compares them (``true`` is not ``1``; ``1`` is ``1.0``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(
            b, sort_keys=True, default=str
        )
    return a == b


def _axes(grid: SweepGrid) -> list[tuple[list[str], list[Any]]]:
    """A grid's axes as (paths, values); a zipped key ``a,b`` is one axis of two paths."""
    return [([p.strip() for p in key.split(",")], values) for key, values in grid.items()]


def swept_paths(sub: Submission) -> list[str]:
    return list(dict.fromkeys(p for grid in sub.grids for paths, _ in _axes(grid) for p in paths))


def point_label(point: dict[str, Any]) -> str:
    """A variant as ``bioprior results`` shows it: ``threshold=learned, reverse=True``."""
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()) or "default"


def _resolve(selector: dict[str, Any], paths: list[str]) -> tuple[dict[str, Any], str | None]:
    """``selector`` with each key written as its full swept path, or why it cannot be."""
    resolved: dict[str, Any] = {}
    shown = ", ".join(p.split(".")[-1] for p in paths) or "none: the submission has no sweep"
    for key, value in selector.items():
        found = [p for p in paths if p == key or p.endswith("." + key)]
        if not found:
            return {}, f"{key!r} is not a swept path (swept: {shown})"
        if len(found) > 1:
            return {}, f"{key!r} names several swept paths ({', '.join(found)}): write more of it"
        resolved[found[0]] = value
    return resolved, None


def _points(sub: Submission, resolved: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The distinct sweep points (as loading expands them) whose values include ``resolved``."""
    seen: set[str] = set()
    for grid in sub.grids:
        axes = _axes(grid)
        if not set(resolved) <= {p for paths, _ in axes for p in paths}:
            continue  # this grid leaves a selected path at its base value: not in the variant
        choices = []
        for paths, values in axes:
            options = []
            for v in values:
                parts = [v] if len(paths) == 1 else v
                if not isinstance(parts, list) or len(parts) != len(paths):
                    continue  # a bad zipped value: loading reports it
                point = dict(zip(paths, parts, strict=True))
                if all(_same(point[p], resolved[p]) for p in paths if p in resolved):
                    options.append(point)
            choices.append(options)
        for combo in itertools.product(*choices):
            point = {k: v for part in combo for k, v in part.items()}
            ident = repr(sorted(point.items(), key=lambda kv: kv[0]))
            if ident not in seen:
                seen.add(ident)
                yield point
    if not resolved and all(0 in (len(v) for v in g.values()) for g in sub.grids):
        yield {}  # a sweep without a point: the submission as written is the one variant


def select_variants(
    sub: Submission, selector: dict[str, Any], limit: int = 3
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` variants that ``selector`` matches, or why it names none."""
    paths = swept_paths(sub)
    resolved, problem = _resolve(selector, paths)
    if problem:
        return [], problem
    found = list(itertools.islice(_points(sub, resolved), limit))
    return found, None


def _selector_problem(sub: Submission, selector: dict[str, Any]) -> str | None:
    points, problem = select_variants(sub, selector)
    if problem:
        return problem
    if not points:
        return "matches no variant of the sweep"
    if len(points) > 1:
        shown = "; ".join(point_label(p) for p in points[:2])
        more = "" if len(points) == 2 else " ..."
        return f"matches several variants ({shown}{more}): give more sweep values"
    return None


def reference_problems(
    sub: Submission, whole: bool = False
) -> list[tuple[tuple[Any, ...], str, Any]]:
    """``(location, message, input)`` of each reference entry that names no benchmark of the
    submission or does not match exactly one of its variants.

    Loading validates each sweep point again on its own, without its sweep, so a submission
    without a sweep cannot be told from one of those points: its entries are matched only when
    ``whole`` says that ``sub`` is the submission as written (then a submission without a sweep
    has one variant, which entries name by leaving ``variant`` out)."""
    assert sub.reference is not None
    names = [b.name for b in sub.benchmarks]
    listed = ", ".join(dict.fromkeys(names))
    size = sum(math.prod(len(v) for v in grid.values()) for grid in sub.grids if grid)
    match = (whole or any(sub.grids)) and size <= MAX_MATCH_POINTS
    out: list[tuple[tuple[Any, ...], str, Any]] = []
    for i, entry in enumerate(sub.reference.entries):
        loc: tuple[Any, ...] = ("reference", "entries", i)
        if entry.benchmark is None:
            if len(set(names)) > 1:
                out.append((loc, f"name the `benchmark` (the submission runs {listed})", None))
        elif names.count(entry.benchmark) != 1:
            times = "not one of" if entry.benchmark not in names else "listed more than once in"
            out.append(
                (
                    (*loc, "benchmark"),
                    f"{entry.benchmark!r} is {times} the submission's benchmarks ({listed})",
                    entry.benchmark,
                )
            )
        if not match:
            continue
        problems = {}
        for field in ("variant", "minus"):
            selector = getattr(entry, field)
            if selector is not None:
                problems[field] = _selector_problem(sub, selector)
                if problems[field]:
                    out.append(((*loc, field), problems[field], selector))
        if (
            entry.minus is not None
            and not any(problems.values())
            and sub.variant_of(entry.variant) == sub.variant_of(entry.minus)
        ):
            out.append(((*loc, "minus"), "is the same variant as `variant`", entry.minus))
    return out


class Submission(Strict):
    """A model, its constraints, a training recipe, sweeps, seeds and the benchmarks to run."""

    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=MAX_NAME,
        description="Unique submission name (results key).",
    )
    description: str = Field(
        default="", max_length=20_000, description="What this submission tests."
    )
    authors: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=100, description="Who made it."
    )
    model: PluginRef = Field(description="The model plugin and its parameters.")
    constraints: list[ConstraintRef] = Field(
        default_factory=list,
        max_length=100,
        description="Biological constraints, applied in the order listed.",
    )
    training: TrainingRecipe = Field(description="Training recipe.")
    sweep: SweepGrid | Annotated[list[SweepGrid], Field(max_length=100)] = Field(
        default_factory=dict,
        description="A grid over parameter paths (e.g. `constraints.0.params.sigma: [0, 0.2]`), or "
        "a list of grids whose union is run. A key `a,b` zips paths: its values are [a, b] pairs.",
    )
    seeds: list[Seed] = Field(
        default_factory=lambda: [0],
        min_length=1,
        max_length=1000,
        description=f"One run per seed (0 .. {MAX_SEED}); seeds every choice.",
    )
    benchmarks: list[PluginRef] = Field(
        min_length=1, max_length=100, description="Benchmarks to score it on."
    )
    limits: StepLimits = Field(
        default_factory=StepLimits, description="Per-step limits (wall time, memory, retries)."
    )
    reference: Reference | None = Field(
        default=None,
        description="The paper's published numbers, shown beside the measured ones "
        "(`bioprior results --paper FILE`, the report); never part of a key.",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_name(cls, value: Any) -> Any:
        return PluginRef.coerce(value)

    @field_validator("benchmarks", "constraints", mode="before")
    @classmethod
    def _ref_names(cls, value: Any) -> Any:
        return [PluginRef.coerce(v) for v in value] if isinstance(value, list) else value

    @property
    def grids(self) -> list[SweepGrid]:
        return self.sweep if isinstance(self.sweep, list) else [self.sweep]

    @model_validator(mode="after")
    def _reference_matches(self) -> Submission:
        """Each reference entry names one of the benchmarks and matches exactly one variant."""
        if self.reference is None:
            return self
        problems = reference_problems(self)
        if problems:
            raise ValidationError.from_exception_data(
                "Submission",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("reference", "{problem}", {"problem": msg}),
                        loc=loc,
                        input=value,
                    )
                    for loc, msg, value in problems
                ],
            )
        return self

    def variant_of(self, selector: dict[str, Any]) -> dict[str, Any]:
        """The one variant (sweep point, as results store it) that ``selector`` picks."""
        points, problem = select_variants(self, selector)
        if problem or len(points) != 1:
            raise ValueError(problem or f"{len(points)} variants match {selector!r}")
        return points[0]
