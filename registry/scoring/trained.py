"""The trained model of one variant and seed of a scored submission, read from the weights cache
and trusted only where it matches what the results database recorded (RobustBench's
``load_model``, for the trainings bioprior ran itself): ``bioprior.load_trained``.

Nothing is trained here: a training that no run has finished is an error that says how to run
it. The model comes back as the benchmarks see it, in evaluation mode: it takes images in [0, 1]
(the training set's normalization travels with the weights, ``engine.trainer.Normalized``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioprior.registry.hooks.loading import Registry
from bioprior.registry.planning.jobs import plan
from bioprior.registry.planning.spec import TrainingSpec
from bioprior.registry.store.results import ResultStore
from bioprior.registry.store.weights import cached_problem, weights_file
from bioprior.registry.submissions.loading import LoadedSubmission
from bioprior.registry.submissions.schema import point_label, select_variants

if TYPE_CHECKING:
    from torch import nn


class NotTrained(LookupError):
    """The variant and seed asked for exist, but no run has finished their training."""


def _ident(point: dict[str, Any]) -> str:
    return repr(sorted(point.items()))


def training_of(
    loaded: LoadedSubmission, seed: int, variant: dict[str, Any] | None = None
) -> tuple[dict[str, Any], TrainingSpec]:
    """The variant and training spec of ``loaded`` at ``seed`` whose sweep values include
    ``variant`` (each key a swept path or its last part, as ``reference:`` entries select:
    :func:`~bioprior.registry.submissions.schema.select_variants`); one, or a
    :class:`LookupError` naming what there is."""
    name = loaded.submission.name
    jobs = plan([loaded])
    at_seed = [j for j in jobs if j.seed == seed]
    if not at_seed:
        seeds = sorted({j.seed for j in jobs})
        raise LookupError(f"{name}: seed: {seed} is not one of its seeds {seeds}")
    points, problem = select_variants(loaded.submission, variant or {}, limit=len(at_seed))
    if problem:
        raise LookupError(f"{name}: variant: {problem}")
    wanted = {_ident(p) for p in points}
    found: dict[str, tuple[dict[str, Any], TrainingSpec]] = {}
    for job in at_seed:
        if _ident(job.variant) in wanted:
            found.setdefault(job.training.key, (job.variant, job.training))
    if len(found) != 1:
        variants = "; ".join(sorted({point_label(j.variant) for j in at_seed}))
        what = "no variant matches" if not found else f"{len(found)} variants match"
        raise LookupError(f"{name}: variant: {what} {variant or {}}; its variants: {variants}")
    return next(iter(found.values()))


def load_trained(
    loaded: LoadedSubmission,
    registry: Registry,
    *,
    seed: int,
    variant: dict[str, Any] | None,
    home: Path,
    db: Path,
    device: str = "cpu",
) -> nn.Module:
    """The trained model (see the module docstring); :class:`NotTrained` where no run finished
    its training, ``ValueError`` where its weights file may not be trusted."""
    import torch

    from bioprior.registry.engine.service import TrainingService  # lazy: torch

    chosen, spec = training_of(loaded, seed, variant)
    name = loaded.submission.name
    path = weights_file(home / "weights", spec.key)
    if not path.exists():
        raise NotTrained(
            f"{name} seed {seed} [{point_label(chosen)}]: not trained in {home} (no {path.name}): "
            f"`bioprior score` the submission first"
        )
    recorded: set[str] = set()
    if db.exists():
        with ResultStore(db, readonly=True) as store:
            recorded = store.recorded_weights(spec.key)
    problem = cached_problem(path, spec.key, recorded)
    if problem:
        raise ValueError(f"{path}: weights: {problem}")
    trained = TrainingService(home, torch.device(device)).cached(spec)  # never trains
    if trained is None:  # changed since the check above
        raise ValueError(f"{path}: weights: could not be read")
    return trained.module
