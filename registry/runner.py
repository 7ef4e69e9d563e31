"""The worker: runs one job (a benchmark on a trained model) and returns its outcome."""

from __future__ import annotations

import math
import time

from .context import BenchmarkContext
from .executor import JobOutcome, failed, now
from .planner import Job
from .plugins import Registry
from .training import TrainingService


class JobRunner:
    def __init__(self, service: TrainingService, registry: Registry):
        self.service = service
        self.registry = registry

    def __call__(self, job: Job) -> JobOutcome:
        started, t0 = now(), time.perf_counter()
        device = str(self.service.device)
        try:
            benchmark = job.benchmark.entry.build(job.benchmark.params)
            ctx = BenchmarkContext(job, self.service, self.registry)
            result = benchmark.run(ctx)
        except Exception as exc:  # noqa: BLE001 - recorded as a failed job
            return failed(job, exc, started, t0, device)
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
        )
