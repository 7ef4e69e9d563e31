"""What a benchmark plugin's factory returns: a :class:`Benchmark` scored through a context.

A benchmark never touches the core: it asks its :class:`~bioprior.registry.engine.context.BenchmarkContext`
for trained models (shared and cached across benchmarks), derived datasets and evaluations,
and returns metrics plus a summary score in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    import torch

    from bioprior.registry.engine.context import BenchmarkContext
    from bioprior.registry.planning.needs import Needs
    from bioprior.registry.planning.spec import TrainingSpec


@dataclass(frozen=True)
class Work:
    """What one run of a benchmark computes, for the plan's estimate of a run never timed before:
    passes of one test image through the scored model. ``forward``: inference passes per image
    (each condition, epsilon or noise draw evaluated); ``gradient``: passes that also take the
    gradient with respect to the input (an attack step), per image; ``images``: how many test
    images it uses at most (None: all of them); ``stochastic``: the count instead when the model
    is random at inference (the plan checks: two identical evaluation passes that differ), e.g.
    an attack averaging its gradient over several passes. ``stimuli``: the run first generates
    stimulus sets, what its ``preview`` makes for a few images (corrupted or rendered copies of
    the test images), cached by test images and seed, so that only the plan's first run of a
    seed generates them: the plan times ``preview`` on a few test images and scales it to
    ``images``. Other work the passes do not count makes the estimate a floor."""

    forward: float = 0.0
    gradient: float = 0.0
    images: int | None = None
    stochastic: Work | None = None
    stimuli: bool = False


@dataclass
class BenchmarkResult:
    metrics: dict[str, Any]
    score: float | None
    extra: dict[str, Any] = field(default_factory=dict)


class Benchmark:
    """Base class: implement ``run``; ``trainings`` declares the models it trains (planned work)."""

    def __init__(self, params: BaseModel):
        self.params = params

    def trainings(self, needs: Needs) -> list[TrainingSpec]:
        """The trainings ``run`` will ask ``ctx.trained(...)`` for, as specs: call
        ``needs.trained(...)`` with the same arguments as ``run`` does. The planner trains each
        once (deduped by content key, batched where it can) before the job runs; asking ``ctx``
        for an undeclared one is an error. Default: the submission's own model."""
        return [needs.trained()]

    def work(self, needs: Needs) -> Work | None:
        """The passes a run makes (:class:`Work`), for the plan's estimate of a run never timed
        (a run like one in the results database is estimated from its measured time). Default
        None: the plan counts one forward pass per split and model, a floor."""
        return None

    def stimuli_cached(self, data: Any, seed: int) -> float | None:
        """For a benchmark whose ``Work`` generates stimuli: the share of what a run on
        ``data``'s test images with ``seed`` generates that the stimulus cache holds already (a
        run stopped while it generated them), so the plan counts only the rest. Default None:
        not known, counted as none cached."""
        return None

    def run(self, ctx: BenchmarkContext) -> BenchmarkResult:  # pragma: no cover - interface
        raise NotImplementedError

    def preview(self, images: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """Example stimuli per condition for ``bioprior preview``: ``images`` are float (N, C, H, W)
        in [0, 1]; return {condition label: transformed images of the same layout}. Benchmarks
        that show the model transformed images override this."""
        raise NotImplementedError(f"{type(self).__name__} has no stimuli to preview")
