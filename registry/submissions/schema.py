"""The submission schema (pydantic): the YAML a researcher writes, field by field.

``bioprior schema submission`` prints it as JSON Schema; the field descriptions are the docs.
Plugin parameters are validated later against each plugin's own schema (see ``submission.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
