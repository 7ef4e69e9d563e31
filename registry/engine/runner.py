"""The runner: runs one step of the plan in this process and returns its outcome. A training step trains its
member(s) (batched when there are several) and saves each one's weights under its own key; an
evaluation step runs the job's benchmark on the models its trainings produced."""

from __future__ import annotations

import math
import time
from typing import Any

from bioprior.registry.base import denormals
from bioprior.registry.base.provenance import torch_threads
from bioprior.registry.engine.context import BenchmarkContext
from bioprior.registry.engine.service import TrainingService
from bioprior.registry.hooks.loading import Registry
from bioprior.registry.planning.declare import Declared, build_benchmark, declared_trainings
from bioprior.registry.planning.jobs import Job
from bioprior.registry.planning.outcomes import JobOutcome, Outcome, TrainOutcome, failed, now
from bioprior.registry.planning.steps import EvaluateStep, TrainStep


class StepRunner:
    """Runs both kinds of step in this process (a
    :data:`~bioprior.registry.planning.outcomes.Worker`); :class:`~.worker.StepWorker` rebuilds
    one from plain settings in any process."""

    def __init__(self, service: TrainingService, registry: Registry):
        self.service = service
        self.registry = registry
        #: job key -> the trainings its benchmark declared (planned steps bring theirs)
        self.declared: Declared = {}

    def __call__(self, step: Any) -> Outcome:
        if isinstance(step, TrainStep):
            return self.train(step)
        if isinstance(step, EvaluateStep):
            if step.trainings is not None:  # declared when it was planned
                self.declared.setdefault(step.key, step.trainings)
            return self.evaluate(step.job)
        return self.evaluate(step)

    def train(self, step: TrainStep) -> TrainOutcome:
        started, t0 = now(), time.perf_counter()
        device = str(self.service.device)
        try:
            trained = self.service.train(list(step.members))
        except Exception as exc:  # noqa: BLE001 - recorded as a failed step
            return failed(step, exc, started, t0, device)  # type: ignore[return-value]
        return TrainOutcome(
            step,
            "ok",
            started_at=started,
            finished_at=now(),
            duration_s=time.perf_counter() - t0,
            device=device,
            weights={t.spec.key: t.weights_hash for t in trained},
        )

    def evaluate(self, job: Job) -> JobOutcome:
        started, t0, cpu0 = now(), time.perf_counter(), time.process_time()
        device = str(self.service.device)
        try:
            from bioprior.registry.base.torchvision_compat import ensure_torchvision  # lazy: torch

            ensure_torchvision()  # before any benchmark code imports torchvision
            benchmark = build_benchmark(job)
            trainings = declared_trainings(job, self.registry, self.declared, benchmark)
            ctx = BenchmarkContext(job, self.service, self.registry, trainings)
            result = benchmark.run(ctx)
            ctx.finish()
        except Exception as exc:  # noqa: BLE001 - recorded as a failed job
            return failed(job, exc, started, t0, device)  # type: ignore[return-value]
        score = result.score
        if score is not None and not (isinstance(score, (int, float)) and math.isfinite(score)):
            score = None
        return JobOutcome(
            job,
            "ok",
            metrics=result.metrics,
            score=score,
            started_at=started,
            finished_at=now(),
            duration_s=time.perf_counter() - t0,
            device=device,
            weights_hash=ctx.weights_hash,
            weights=dict(ctx.used),
            threads=torch_threads(),
            cpu_s=time.process_time() - cpu0,
            denormals=_denormals(device),
            resumed=ctx.resumed,
        )


def _denormals(device: str) -> str | None:
    """How this process's CPU threads treat subnormal floats (what can change a CPU result's
    last bits; :mod:`~bioprior.registry.base.denormals`)."""
    return denormals.state() if device == "cpu" else None
