"""Neural data for neural constraints: stimuli and the responses (or similarities) they evoked.

A ``neural_data`` plugin's factory returns a :class:`NeuralData`. Constraints name one with a
:class:`NeuralDataRef` parameter (``{name: ..., params: {...}}``), validated against the
registry when the submission is, and build it with :func:`load_neural_data`.

Recorded and synthetic data are never confused: ``synthetic`` is part of the data and of every
metric computed on it (li2019 and safarani2021 used recordings from mouse and monkey V1 that are
not available offline; see ``bioprior.plugins.neural_data`` for the file format).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from bioprior.registry.base.hashing import content_hash
from bioprior.registry.hooks import loading as plugins

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class NeuralData:
    """Stimuli (N, C, H, W) in [0, 1] (float) or [0, 255] (uint8) and what they evoked.

    ``responses``: (repeats, N, neurons) float, NaN where a repeat is missing; one repeat when only
    trial averages exist. ``similarity``: a precomputed (N, N) stimulus similarity matrix. At least
    one of the two is present.
    """

    name: str
    stimuli: torch.Tensor
    responses: torch.Tensor | None = None
    similarity: torch.Tensor | None = None
    synthetic: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        n = len(self.stimuli)
        if self.stimuli.ndim != 4:
            raise ValueError(
                f"{self.name}: stimuli must be (N, C, H, W), got {tuple(self.stimuli.shape)}"
            )
        if self.responses is None and self.similarity is None:
            raise ValueError(f"{self.name}: neither responses nor a similarity matrix")
        if self.responses is not None and (
            self.responses.ndim != 3 or self.responses.shape[1] != n
        ):
            raise ValueError(
                f"{self.name}: responses must be (repeats, {n}, neurons), got {tuple(self.responses.shape)}"
            )
        if self.similarity is not None and tuple(self.similarity.shape) != (n, n):
            raise ValueError(
                f"{self.name}: similarity must be ({n}, {n}), got {tuple(self.similarity.shape)}"
            )

    @property
    def num_stimuli(self) -> int:
        return len(self.stimuli)

    @property
    def num_neurons(self) -> int:
        return 0 if self.responses is None else int(self.responses.shape[2])

    @property
    def repeats(self) -> int:
        return 0 if self.responses is None else int(self.responses.shape[0])

    def mean_responses(self) -> torch.Tensor:
        """Trial-averaged responses (N, neurons), ignoring missing (NaN) repeats."""
        if self.responses is None:
            raise ValueError(f"{self.name} has no responses, only a similarity matrix")
        return self.responses.nanmean(0)

    def subset(self, index: torch.Tensor) -> NeuralData:
        """The stimuli ``index`` with their responses / similarities."""
        return replace(
            self,
            stimuli=self.stimuli[index],
            responses=None if self.responses is None else self.responses[:, index],
            similarity=None if self.similarity is None else self.similarity[index][:, index],
        )

    def split(self, test_fraction: float, seed: int) -> tuple[NeuralData, NeuralData]:
        """A seeded (train, test) split of the stimuli."""
        import torch

        perm = torch.randperm(self.num_stimuli, generator=torch.Generator().manual_seed(seed))
        n_test = round(self.num_stimuli * test_fraction)
        return self.subset(perm[n_test:].sort().values), self.subset(perm[:n_test].sort().values)


class NeuralDataRef(BaseModel):
    """A neural_data plugin and its parameters, checked against the registry at validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    plugin_kind: ClassVar[str] = "neural_data"  # resolved by `bioprior validate`

    name: str = Field(
        description="A registered neural_data plugin (bioprior plugins -k neural_data)."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Its parameters.")

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> NeuralDataRef:
        registry = (info.context or {}).get("registry")
        if registry is None:  # no context: the process-wide registry, if it is loaded yet
            registry = plugins._REGISTRY
        if registry is None:  # None while the registry itself is loading (defaults)
            return self
        try:
            registry.get("neural_data", self.name).parse_params(self.params, registry)
        except plugins.UnknownPluginError as exc:
            raise ValueError(str(exc)) from None
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(map(str, err["loc"]))
            raise ValueError(f"params.{where}: {err['msg']}" if where else err["msg"]) from None
        return self


def load_neural_data(ref: NeuralDataRef) -> NeuralData:
    """Build the neural data a reference names (cached per process by content)."""
    key = content_hash({"name": ref.name, "params": ref.params})
    if key not in _CACHE:
        data = plugins.get_registry().get("neural_data", ref.name).build(ref.params)
        if not isinstance(data, NeuralData):
            raise TypeError(
                f"neural_data {ref.name!r} returned {type(data).__name__}, not NeuralData"
            )
        _CACHE[key] = data
    return _CACHE[key]


_CACHE: dict[str, NeuralData] = {}
