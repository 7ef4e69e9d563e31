"""What a benchmark sees of the core while it runs: the job's planned, trained model(s), derived
data, evaluation. Declaring trainings (``Benchmark.trainings``) uses the torch-free base
:class:`~bioprior.registry.planning.needs.Needs` with the same calls."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING

from bioprior.registry.base.provenance import torch_threads
from bioprior.registry.engine.journal import EvaluationJournal
from bioprior.registry.engine.trainer import accuracy, seeded
from bioprior.registry.hooks.loading import Registry
from bioprior.registry.planning.declare import declared_trainings, training_keys
from bioprior.registry.planning.jobs import Job
from bioprior.registry.planning.needs import Needs
from bioprior.registry.planning.spec import TrainingSpec
from bioprior.registry.store.weights import journal_file

if TYPE_CHECKING:
    from bioprior.registry.engine.service import TrainedModel, TrainingService


class UndeclaredTraining(RuntimeError):
    """A benchmark asked for a trained model it did not declare in ``trainings``."""


class BenchmarkContext(Needs):
    """``trainings``: what the job's benchmark declared (None: declared here, with a benchmark
    built for it); only these may be asked for."""

    def __init__(
        self,
        job: Job,
        service: TrainingService,
        registry: Registry,
        trainings: Iterable[TrainingSpec] | None = None,
    ):
        super().__init__(job, registry)
        self.service = service
        if trainings is None:
            trainings = declared_trainings(job, registry)
        self.training_keys = training_keys(trainings)
        self.used: dict[str, str] = {}  # training key -> weights hash, for provenance

    @property
    def device(self):
        return self.service.device

    def trained(self, dataset=None, model=None, constraints=None) -> TrainedModel:
        """The job's model trained on its dataset (shared with every other benchmark). Override
        ``dataset`` (e.g. a random derivation), ``model`` and/or ``constraints`` (e.g. an
        unconstrained surrogate for black-box attacks) to get another model trained with the same
        recipe and seed. Each must be declared by the benchmark's ``trainings`` (the planner
        trains it before the job runs, once per content key)."""
        spec = self.spec(dataset, model, constraints)
        if spec.key not in self.training_keys:
            raise UndeclaredTraining(
                f"benchmark {self.job.benchmark.entry.name!r} asked for a training it did not "
                f"declare: {spec.label} [{spec.key}]; return it from its trainings(needs)"
            )
        trained = self.service.trained(spec)
        self.used[spec.key] = trained.weights_hash
        return trained

    @cached_property
    def journal(self) -> EvaluationJournal:
        """The job's :class:`~.journal.EvaluationJournal`: units of work recorded as they finish,
        recalled by a rerun of the job after a stop (call it after :meth:`trained`: it is
        trusted only for the weights used so far)."""
        identity = {
            "job": self.job.key,
            "trainings": sorted(self.training_keys),
            "weights": dict(sorted(self.used.items())),
            "threads": torch_threads(),
        }
        path, notice = journal_file(self.service.weights_dir, self.job.key), self.service.reporter
        return EvaluationJournal.at(path, identity, self.device, notice.message, self.job.label)

    @property
    def resumed(self) -> dict | None:
        """What the job recalled from its journal (None: nothing; see :mod:`.journal`)."""
        journal = self.__dict__.get("journal")
        return journal.resumed if journal is not None else None

    def finish(self) -> None:
        """The job's result is computed: its journal goes."""
        journal = self.__dict__.get("journal")
        if journal is not None:
            journal.finish()

    @property
    def weights_hash(self) -> str | None:
        """The hash of the job's own trained weights (else of the first model it used)."""
        return self.used.get(self.job.training.key) or next(iter(self.used.values()), None)

    def accuracy(self, trained: TrainedModel, split: str = "test") -> float:
        """Accuracy on a split of the model's own data, with the RNG seeded from the job's seed."""
        data = trained.data
        x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
        with seeded(self.seed, self.device):
            return accuracy(trained.module, x, y)
